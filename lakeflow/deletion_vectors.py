"""Deletion vectors: which rows of a data file a logical file no longer contains.

A Delta `add` may carry a deletion vector (DV) descriptor: the set of row
indexes (0-based positions in the Parquet file) that are soft-deleted. The set
is a 64-bit Roaring bitmap in the "portable" serialization, stored inline in
the log (z85 text) or in a `deletion_vector_<uuid>.bin` file beside the data.

The Roaring format is decoded here with numpy rather than through a native
Roaring library: the three container kinds are a few vectorized lines each, and
every length and offset is checked, so a damaged DV is a `CorruptLogError`
naming the file, never a crash inside a C extension. Writing (`write_vectors`)
serializes each 32-bit bitmap with pyroaring, whose output is the portable
format by construction; small vectors go inline in the log, the rest into a DV file.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from lakeflow.errors import CorruptLogError
from lakeflow.log import check_data_path
from lakeflow.storage import Storage

RowIndexes = npt.NDArray[np.uint64]
"""Sorted, unique row indexes of one data file."""

_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {c: i for i, c in enumerate(_Z85)}
_MAGIC = 1681511377  # little-endian, then a portable 64-bit Roaring bitmap
_NATIVE_MAGIC = 1681511376  # big-endian, then 32-bit bitmaps keyed by position (older writers)
_SERIAL_COOKIE_NO_RUN = 12346
_SERIAL_COOKIE = 12347
_NO_OFFSET_THRESHOLD = 4
_ARRAY_MAX = 4096
_FILE_FORMAT_VERSION = b"\x01"


def z85_encode(data: bytes) -> str:
    """Encode bytes (a multiple of 4 long) as Z85 text, 5 characters per 4 bytes."""
    if len(data) % 4:
        raise ValueError(f"Z85 encodes multiples of 4 bytes, got {len(data)}")
    out = []
    for i in range(0, len(data), 4):
        value = int.from_bytes(data[i:i + 4], "big")
        digits = []
        for _ in range(5):
            value, digit = divmod(value, 85)
            digits.append(_Z85[digit])
        out.append("".join(reversed(digits)))
    return "".join(out)


def z85_decode(text: str, size: int | None = None) -> bytes:
    """Decode Z85 text (5 characters per 4 bytes, big-endian); its first `size` bytes if given.

    When `size` ends inside the last group, the rest of that group is padding: like
    Delta's own decoder (`Base85Codec.decodeBytes`), that group is truncated to 32
    bits and the padding dropped. Every other group must fit in 32 bits.

    Raises:
        CorruptLogError: the text is not valid Z85.
    """
    if len(text) % 5:
        raise CorruptLogError(f"{text!r} is not Z85: its length is not a multiple of 5")
    padded_group = len(text) // 5 - 1 if size is not None and size < len(text) // 5 * 4 else -1
    out = bytearray()
    for i in range(0, len(text), 5):
        value = 0
        for c in text[i:i + 5]:
            digit = _Z85_VALUE.get(c)
            if digit is None:
                raise CorruptLogError(f"{text!r} is not Z85: {c!r} is not in its alphabet")
            value = value * 85 + digit
        if i // 5 == padded_group:
            value &= 0xFFFFFFFF
        elif value > 0xFFFFFFFF:
            raise CorruptLogError(f"{text!r} is not Z85: a group exceeds 32 bits")
        out += value.to_bytes(4, "big")
    return bytes(out if size is None else out[:size])


@dataclass(frozen=True)
class DeletionVector:
    """A parsed deletion vector descriptor (the `deletionVector` of an add or remove).

    Attributes:
        storage_type: `u` (file named by a UUID, relative to the table), `i`
            (inline in the log) or `p` (absolute path; lakeflow refuses it).
        path_or_inline: the encoded UUID (with an optional random prefix), the
            z85 bitmap, or the absolute path.
        offset: where the DV starts in its file (None for inline DVs).
        size: the serialized bitmap's size in bytes.
        cardinality: how many rows it deletes.
    """

    storage_type: str
    path_or_inline: str
    offset: int | None
    size: int
    cardinality: int

    @classmethod
    def parse(cls, descriptor: Mapping[str, Any], where: str) -> DeletionVector:
        """Read a descriptor from the log (JSON object or checkpoint struct).

        Raises:
            CorruptLogError: a field is missing or malformed, or the storage type
                is unknown or an absolute path (lakeflow reads only files inside
                the table root).
        """
        try:
            dv = cls(str(descriptor["storageType"]), str(descriptor["pathOrInlineDv"]),
                     None if descriptor.get("offset") is None else int(descriptor["offset"]),
                     int(descriptor["sizeInBytes"]), int(descriptor["cardinality"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptLogError(f"{where} has an invalid deletion vector {dict(descriptor)}: {e}") from e
        if dv.storage_type == "p":
            raise CorruptLogError(
                f"{where} has a deletion vector stored at the absolute path {dv.path_or_inline!r}; "
                "lakeflow refuses files outside the table root (shallow clones are not supported)"
            )
        if dv.storage_type not in ("u", "i"):
            raise CorruptLogError(
                f"{where} has a deletion vector with unknown storageType {dv.storage_type!r}; "
                "expected 'u', 'i' or 'p'"
            )
        if dv.size < 0 or dv.cardinality < 0 or (dv.offset or 0) < 0:
            raise CorruptLogError(f"{where} has a deletion vector with a negative size or offset")
        return dv

    @property
    def unique_id(self) -> str:
        """The DV's id; (data file path, unique_id) identifies a logical file."""
        suffix = "" if self.offset is None else f"@{self.offset}"
        return f"{self.storage_type}{self.path_or_inline}{suffix}"

    @property
    def file_path(self) -> str:
        """The DV file relative to the table root (storage type `u` only).

        Raises:
            CorruptLogError: the encoded UUID is malformed.
        """
        prefix, encoded = self.path_or_inline[:-20], self.path_or_inline[-20:]
        if len(encoded) != 20:
            raise CorruptLogError(f"deletion vector path {self.path_or_inline!r} is too short for a UUID")
        name = f"deletion_vector_{uuid.UUID(bytes=z85_decode(encoded))}.bin"
        return check_data_path(f"{prefix}/{name}" if prefix else name, "a deletion vector")

    def read(self, storage: Storage) -> RowIndexes:
        """The deleted row indexes, from the log (inline) or the DV file.

        Raises:
            CorruptLogError: the DV is damaged, or does not hold `cardinality` rows.
            FileNotFoundError: the DV file is missing.
        """
        if self.storage_type == "i":
            where = f"the inline deletion vector {self.path_or_inline[:20]}..."
            data = z85_decode(self.path_or_inline, self.size)
        else:
            where = f"deletion vector file {self.file_path} at offset {self.offset or 0}"
            data = _read_stored(storage, self.file_path, self.offset or 0, self.size, where)
        rows = decode_bitmap_array(data, where)
        if len(rows) != self.cardinality:
            raise CorruptLogError(
                f"{where} holds {len(rows)} rows but the log says {self.cardinality}"
            )
        return rows


def encode_bitmap_array(rows: RowIndexes) -> bytes:
    """Serialize sorted unique row indexes as Delta's `RoaringBitmapArray` (portable format).

    The magic number, the count of 32-bit bitmaps (64-bit), then per bitmap its
    key (the high 32 bits of its rows) and the portable 32-bit Roaring bitmap of
    their low bits, in key order.
    """
    rows = np.asarray(rows, np.uint64)
    high = (rows >> np.uint64(32)).astype(np.uint32)
    keys, starts = np.unique(high, return_index=True)
    parts = [struct.pack("<IQ", _MAGIC, len(keys))]
    ends = [*starts[1:].tolist(), len(rows)] if len(rows) else []
    for key, start, end in zip(keys.tolist(), starts.tolist(), ends, strict=True):
        bitmap = BitMap((rows[start:end] & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        bitmap.run_optimize()
        parts.append(struct.pack("<I", key) + bitmap.serialize())
    return b"".join(parts)


INLINE_MAX_BYTES = 256
"""Vectors up to this size (serialized) are stored inline in the log: no DV file to write, nor to read back."""


def write_vectors(storage: Storage, vectors: Sequence[RowIndexes]) -> tuple[str | None, list[dict[str, Any]]]:
    """Store `vectors`; one descriptor (log form) per vector, and the DV file written (None: none was).

    Small vectors go inline (storage type `i`: the Z85 text of the bitmap padded
    with zero bytes to a multiple of 4, and its exact size), the others into one new DV file.
    """
    encoded = [encode_bitmap_array(rows) for rows in vectors]
    large = [i for i, data in enumerate(encoded) if len(data) > INLINE_MAX_BYTES]
    path, stored = write_dv_file(storage, [vectors[i] for i in large]) if large else (None, [])
    descriptors = dict(zip(large, stored, strict=True))
    return path, [descriptors.get(i) or {
        "storageType": "i", "pathOrInlineDv": z85_encode(data + bytes(-len(data) % 4)),
        "sizeInBytes": len(data), "cardinality": len(rows)}
        for i, (data, rows) in enumerate(zip(encoded, vectors, strict=True))]


def write_dv_file(storage: Storage, vectors: Sequence[RowIndexes]) -> tuple[str, list[dict[str, Any]]]:
    """Write `vectors` into one new DV file; its path and one descriptor (log form) per vector.

    The file is the format version byte, then per vector its big-endian size,
    the serialized bitmap and its big-endian CRC-32; a descriptor's `offset`
    points at the size. The file is named by a random UUID (storage type `u`).
    """
    file_id = uuid.uuid4()
    out, descriptors = bytearray(_FILE_FORMAT_VERSION), []
    for rows in vectors:
        data = encode_bitmap_array(rows)
        descriptors.append({"storageType": "u", "pathOrInlineDv": z85_encode(file_id.bytes),
                            "offset": len(out), "sizeInBytes": len(data), "cardinality": len(rows)})
        out += struct.pack(">I", len(data)) + data + struct.pack(">I", zlib.crc32(data))
    path = f"deletion_vector_{file_id}.bin"
    storage.write(path, bytes(out))
    return path, descriptors


def physical_rows(deleted: RowIndexes, logical: npt.NDArray[np.int64]) -> RowIndexes:
    """The row indexes in the data file of the rows at `logical` positions of the file less `deleted`.

    `deleted` (sorted) are the rows a file's current DV removes; a logical row i
    is the data file's row p with p minus the deleted rows before it equal to i.
    """
    logical = np.asarray(logical, np.int64)
    if not len(deleted):
        return logical.astype(np.uint64)
    gaps = deleted.astype(np.int64) - np.arange(len(deleted), dtype=np.int64)
    return (logical + np.searchsorted(gaps, logical, side="right")).astype(np.uint64)


def _read_stored(storage: Storage, path: str, offset: int, size: int, where: str) -> bytes:
    """The bitmap bytes of one DV in a DV file (version byte; size, bitmap, CRC-32 per DV)."""
    fs, root = storage.arrow_fs()
    with fs.open_input_file(f"{root}/{path}") as f:
        version = f.read_at(1, 0)
        framed = f.read_at(size + 8, offset)
    if version != b"\x01":
        raise CorruptLogError(f"{where}: unknown DV file format version {version!r} (expected 1)")
    if len(framed) != size + 8:
        raise CorruptLogError(f"{where}: the file ends before the {size} bytes the log announces")
    stored_size, = struct.unpack_from(">I", framed, 0)
    data: bytes = framed[4:4 + size]
    checksum, = struct.unpack_from(">I", framed, 4 + size)
    if stored_size != size:
        raise CorruptLogError(f"{where}: the file says {stored_size} bytes, the log {size}")
    if zlib.crc32(data) != checksum:
        raise CorruptLogError(f"{where}: CRC-32 checksum mismatch; the file is damaged")
    return data


def decode_bitmap_array(data: bytes, where: str = "deletion vector") -> RowIndexes:
    """Decode Delta's serialized `RoaringBitmapArray` into sorted row indexes.

    The protocol's format is a magic number (little-endian) and a portable
    64-bit Roaring bitmap: a count, then (32-bit key, 32-bit bitmap) pairs.
    Older writers used the "native" format, which the protocol's own inline
    example is in: a big-endian magic and count, then (size, 32-bit bitmap)
    pairs whose keys are their positions.

    Raises:
        CorruptLogError: the bytes are in neither format.
    """
    try:
        parts: list[RowIndexes] = []
        magic, = struct.unpack_from("<I", data, 0)
        if magic == _MAGIC:
            buckets, = struct.unpack_from("<Q", data, 4)
            pos = 12
            for _ in range(buckets):
                key, = struct.unpack_from("<I", data, pos)
                low, pos = _decode_roaring32(data, pos + 4)
                parts.append((np.uint64(key) << np.uint64(32)) | low.astype(np.uint64))
        elif magic == int.from_bytes(_NATIVE_MAGIC.to_bytes(4, "big"), "little"):
            buckets, = struct.unpack_from(">I", data, 4)
            pos = 8
            for key in range(buckets):
                size, = struct.unpack_from(">I", data, pos)
                low, end = _decode_roaring32(data, pos + 4)
                if end != pos + 4 + size:
                    raise ValueError(f"bitmap {key} is not {size} bytes long")
                parts.append((np.uint64(key) << np.uint64(32)) | low.astype(np.uint64))
                pos = end
        else:
            raise CorruptLogError(f"{where}: bad magic number {magic} (expected {_MAGIC})")
    except (struct.error, ValueError, IndexError) as e:
        raise CorruptLogError(f"{where} is not a valid Roaring bitmap: {e}") from e
    if pos != len(data):
        raise CorruptLogError(f"{where}: {len(data) - pos} unexpected bytes after the bitmap")
    rows = np.concatenate(parts) if parts else np.empty(0, np.uint64)
    if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):
        raise CorruptLogError(f"{where}: row indexes are not strictly increasing")
    return rows


def _decode_roaring32(data: bytes, pos: int) -> tuple[npt.NDArray[np.uint32], int]:
    """One 32-bit Roaring bitmap (RoaringFormatSpec) at `pos`: (values, position after it)."""
    start = pos
    cookie, = struct.unpack_from("<I", data, pos)
    pos += 4
    if cookie & 0xFFFF == _SERIAL_COOKIE:
        count = (cookie >> 16) + 1
        run_flags = np.unpackbits(np.frombuffer(data, np.uint8, (count + 7) // 8, pos),
                                  bitorder="little")[:count].astype(bool)
        pos += (count + 7) // 8
    elif cookie == _SERIAL_COOKIE_NO_RUN:
        count, = struct.unpack_from("<I", data, pos)
        pos += 4
        run_flags = np.zeros(count, bool)
    else:
        raise ValueError(f"unknown Roaring cookie {cookie}")
    header = np.frombuffer(data, "<u2", 2 * count, pos).reshape(count, 2).astype(np.uint32)
    pos += 4 * count
    if cookie == _SERIAL_COOKIE_NO_RUN or count >= _NO_OFFSET_THRESHOLD:
        offsets = np.frombuffer(data, "<u4", count, pos)
        pos += 4 * count
    else:
        offsets = None
    values = []
    for i in range(count):
        if offsets is not None and start + int(offsets[i]) != pos:
            raise ValueError(f"container {i} is not where the offset header says")
        cardinality = int(header[i, 1]) + 1
        if run_flags[i]:
            runs, = struct.unpack_from("<H", data, pos)
            pairs = np.frombuffer(data, "<u2", 2 * runs, pos + 2).reshape(runs, 2).astype(np.int64)
            pos += 2 + 4 * runs
            lengths = pairs[:, 1] + 1
            low = (np.repeat(pairs[:, 0] - np.cumsum(lengths) + lengths, lengths)
                   + np.arange(int(lengths.sum())))
        elif cardinality <= _ARRAY_MAX:
            low = np.frombuffer(data, "<u2", cardinality, pos).astype(np.int64)
            pos += 2 * cardinality
        else:
            bits = np.unpackbits(np.frombuffer(data, np.uint8, 8192, pos), bitorder="little")
            low = np.flatnonzero(bits)
            pos += 8192
        if len(low) != cardinality or (len(low) and int(low.max()) > 0xFFFF):
            raise ValueError(f"container {i} holds {len(low)} values, its header says {cardinality}")
        values.append((header[i, 0] << np.uint32(16)) | low.astype(np.uint32))
    return (np.concatenate(values) if values else np.empty(0, np.uint32)), pos


@dataclass(frozen=True)
class RowSelection:
    """Which rows of a data file to read: all but `indexes`, or (`keep`) only `indexes`."""

    indexes: RowIndexes
    keep: bool = False

    def mask(self, num_rows: int, where: str) -> npt.NDArray[np.bool_]:
        """A boolean mask over the file's `num_rows` rows: True where a row is read.

        Raises:
            CorruptLogError: an index is past the end of the file.
        """
        self.check(num_rows, where)
        mask = np.full(num_rows, not self.keep)
        mask[self.indexes] = self.keep
        return mask

    def check(self, num_rows: int, where: str) -> None:
        """Refuse an index past the end of a file of `num_rows` rows.

        Raises:
            CorruptLogError: an index is past the end of the file.
        """
        if len(self.indexes) and int(self.indexes[-1]) >= num_rows:
            raise CorruptLogError(
                f"the deletion vector of {where} names row {int(self.indexes[-1])}, but the file "
                f"has {num_rows} rows"
            )
