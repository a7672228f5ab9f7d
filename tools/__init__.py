"""Build helpers (the docs site's hooks); not part of the installed package."""
