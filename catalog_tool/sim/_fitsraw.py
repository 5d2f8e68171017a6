"""Raw FITS writing for the simulator's large image HDUs, and CHECKSUM/DATASUM without re-reading.

Why not fitsio for everything: ``create_image_hdu`` zero-fills the whole data unit before any row is
written (every byte of a coadd would reach the disk twice), and ``write_checksum`` re-reads the data
unit to sum it. A DESI coadd with RESOLUTION is ~450 kB per spectrum, so both dominated the
simulator's run time. Here image HDUs are appended as header bytes plus a data region sized with
``ftruncate`` (no fill written), their rows are written in place with ``pwrite``, and the FITS
checksum of each data unit is accumulated from the arrays as they are written (the 32-bit ones'
complement sum is order-independent). :func:`finalize_checksums` then fills CHECKSUM and DATASUM of
every HDU of the closed file, reading only headers and the data of small HDUs.

The cards follow cfitsio's layout (values right-aligned to column 30, strings padded to 8
characters) and the checksum algorithm is the FITS standard's (Seaman et al., FITS checksum
proposal; cfitsio ``ffcsum``/``ffesum``). The CHECKSUM/DATASUM comments carry no date, so a file is a
deterministic function of its content.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["BLOCK", "card", "header_bytes", "ones_sum", "ones_add", "ones_repeat", "encode_checksum",
           "RawImageWriter", "add_checksum_placeholders", "finalize_checksums"]

BLOCK = 2880
_ZERO_CHECKSUM = "0000000000000000"
_CHECKSUM_COMMENT = "HDU checksum"
_DATASUM_COMMENT = "data unit checksum"
_MASK32 = 0xFFFFFFFF
_BITPIX = {np.dtype("f4"): -32, np.dtype("f8"): -64, np.dtype("i4"): 32, np.dtype("i2"): 16,
           np.dtype("i8"): 64, np.dtype("u1"): 8}


def card(key: str, value, comment: str = "") -> bytes:
    """One 80-byte header card in cfitsio's fixed format."""
    if isinstance(value, bool):
        v = f"{'T' if value else 'F':>20}"
    elif isinstance(value, (int, np.integer)):
        v = f"{int(value):>20d}"
    elif isinstance(value, (float, np.floating)):
        v = f"{float(value):>20.15G}"
    else:
        s = "'" + f"{str(value).replace(chr(39), chr(39) * 2):<8}" + "'"
        v = f"{s:<20}"
    text = f"{key:<8}= {v}" + (f" / {comment}" if comment else "")
    if len(text) > 80:
        raise ValueError(f"header card too long: {text!r}")
    return f"{text:<80}".encode("ascii")


def header_bytes(cards: list[bytes]) -> bytes:
    """Cards plus END, padded with blanks to whole 2880-byte blocks."""
    raw = b"".join(cards) + b"END".ljust(80)
    return raw + b" " * (-len(raw) % BLOCK)


def _fold(s: int) -> int:
    """Fold a non-negative integer into a 32-bit ones' complement value (end-around carry)."""
    while s > _MASK32:
        s = (s & _MASK32) + (s >> 32)
    return s


def ones_sum(data) -> int:
    """FITS 32-bit ones' complement sum of a buffer read as big-endian 32-bit words.

    Parameters
    ----------
    data : ndarray or bytes
        Anything whose bytes, as they lie on disk, are to be summed; length a multiple of 4 (FITS
        data of 4- and 8-byte types always is; pad others with zeros first).
    """
    words = np.frombuffer(memoryview(np.ascontiguousarray(data)).cast("B"), dtype=">u4")
    # Fewer than 2**32 words per call, so the uint64 total cannot overflow before folding.
    return _fold(int(words.sum(dtype=np.uint64)))


def ones_add(a: int, b: int) -> int:
    """Ones' complement sum of two 32-bit checksums."""
    return _fold(a + b)


def ones_repeat(s: int, k: int) -> int:
    """Checksum of ``k`` copies of a buffer whose checksum is ``s``."""
    return _fold(s * k)


def encode_checksum(total: int) -> str:
    """The 16-character CHECKSUM value making an HDU with ones' complement sum ``total`` sum to -0.

    cfitsio ``ffesum(total, complm=TRUE)``: each byte of the complement becomes four ASCII characters
    in 0-9A-Za-z (punctuation avoided), then the string is rotated one place to the right.
    """
    value = _MASK32 - total
    exclude = set(range(0x3A, 0x41)) | set(range(0x5B, 0x61))
    asc = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        q, r = byte // 4 + 0x30, byte % 4
        ch = [q + r, q, q, q]
        for j in (0, 2):
            # Step a pair apart until neither is punctuation (keeps the pair's sum).
            while ch[j] in exclude or ch[j + 1] in exclude:
                ch[j] += 1
                ch[j + 1] -= 1
        for j in range(4):
            asc[4 * j + i] = ch[j]
    return "".join(chr(asc[(k + 15) % 16]) for k in range(16))


def add_checksum_placeholders(hdu) -> None:
    """Append CHECKSUM/DATASUM placeholder cards to a fitsio HDU (filled by :func:`finalize_checksums`)."""
    hdu.write_key("CHECKSUM", _ZERO_CHECKSUM, comment=_CHECKSUM_COMMENT)
    hdu.write_key("DATASUM", "         0", comment=_DATASUM_COMMENT)


class RawImageWriter:
    """Append image HDUs to a closed FITS file and fill their rows in any order.

    Parameters
    ----------
    path : str
        An existing FITS file (e.g. PRIMARY and tables written by fitsio, then closed).
    hdus : list of (extname, dtype, shape, extra_cards)
        Image HDUs to append, in order: numpy dtype, numpy shape (rows first), and extra cards as
        (key, value, comment) tuples (e.g. BUNIT). The row axis is the first one.
    checksum : bool
        Give each header CHECKSUM/DATASUM placeholder cards for :func:`finalize_checksums`.

    Notes
    -----
    The data regions are allocated with ``ftruncate`` (zeros, nothing written), so rows never
    written read back as zeros: that is how unassigned fibres get all-zero data for free.
    """

    def __init__(self, path: str, hdus: list[tuple], *, checksum: bool = True):
        self._fd = os.open(path, os.O_RDWR)
        try:
            pos = os.lseek(self._fd, 0, os.SEEK_END)
            if pos % BLOCK:
                raise ValueError(f"{path} does not end on a FITS block boundary")
            self._info = {}
            self.hdu_index = {}
            first = self._count_hdus(path)
            for k, (name, dtype, shape, extra) in enumerate(hdus):
                dtype = np.dtype(dtype)
                cards = [card("XTENSION", "IMAGE", "IMAGE extension"),
                         card("BITPIX", _BITPIX[dtype], "number of bits per data pixel"),
                         card("NAXIS", len(shape), "number of data axes")]
                # FITS NAXIS1 is the fastest-varying (last numpy) axis.
                for i, n in enumerate(reversed(shape), start=1):
                    cards.append(card(f"NAXIS{i}", int(n), f"length of data axis {i}"))
                cards += [card("PCOUNT", 0, "required keyword; must = 0"),
                          card("GCOUNT", 1, "required keyword; must = 1"),
                          card("EXTNAME", name)]
                cards += [card(*c) for c in extra]
                if checksum:
                    cards += [card("CHECKSUM", _ZERO_CHECKSUM, _CHECKSUM_COMMENT),
                              card("DATASUM", "         0", _DATASUM_COMMENT)]
                hdr = header_bytes(cards)
                os.pwrite(self._fd, hdr, pos)
                nbytes = int(np.prod(shape)) * dtype.itemsize
                row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
                self._info[name] = {"data": pos + len(hdr), "row_bytes": row_bytes, "dtype": dtype.newbyteorder(">"),
                                    "shape": tuple(shape), "sum": 0}
                self.hdu_index[name] = first + k
                pos += len(hdr) + nbytes + (-nbytes % BLOCK)
            os.ftruncate(self._fd, pos)
        except BaseException:
            os.close(self._fd)
            raise

    @staticmethod
    def _count_hdus(path: str) -> int:
        return sum(1 for _ in _iter_hdus(path))

    def write_rows(self, name: str, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` (shape (k,) + row shape) at row ``start`` of HDU ``name``; adds to its DATASUM."""
        info = self._info[name]
        if rows.shape[1:] != info["shape"][1:] or start < 0 or start + rows.shape[0] > info["shape"][0]:
            raise ValueError(f"{name}: rows of shape {rows.shape} do not fit at row {start}")
        be = np.ascontiguousarray(rows, dtype=info["dtype"])
        self.write_bytes(name, start, be, datasum=ones_sum(be))

    def write_bytes(self, name: str, start: int, buf, *, datasum: int) -> None:
        """Write pre-encoded big-endian row bytes at row ``start``; ``datasum`` is their checksum."""
        info = self._info[name]
        view = memoryview(buf).cast("B")
        off = info["data"] + start * info["row_bytes"]
        while view.nbytes:  # pwrite may write less than asked
            done = os.pwrite(self._fd, view, off)
            view, off = view[done:], off + done
        info["sum"] = ones_add(info["sum"], datasum)

    def datasums(self) -> dict[int, int]:
        """HDU index -> accumulated data checksum, for :func:`finalize_checksums`."""
        return {self.hdu_index[n]: i["sum"] for n, i in self._info.items()}

    def close(self) -> None:
        os.close(self._fd)


def _parse_header(raw: bytes) -> dict:
    vals = {}
    for i in range(0, len(raw), 80):
        key = raw[i:i + 8].decode("ascii").strip()
        if raw[i + 8:i + 10] == b"= " and key in ("BITPIX", "PCOUNT", "GCOUNT") or key.startswith("NAXIS"):
            vals[key] = int(raw[i + 10:i + 80].split(b"/")[0])
    return vals


def _iter_hdus(path: str):
    """Yield (header_start, header_bytes, data_start, data_bytes_padded) for each HDU of a file."""
    with open(path, "rb") as f:
        pos = 0
        while True:
            f.seek(pos)
            hdr = b""
            while True:
                block = f.read(BLOCK)
                if len(block) < BLOCK:
                    return
                hdr += block
                if any(block[i:i + 8] == b"END     " for i in range(0, BLOCK, 80)):
                    break
            v = _parse_header(hdr)
            naxis = v.get("NAXIS", 0)
            n = int(np.prod([v[f"NAXIS{i}"] for i in range(1, naxis + 1)])) if naxis else 0
            nbytes = abs(v["BITPIX"]) // 8 * v.get("GCOUNT", 1) * (v.get("PCOUNT", 0) + n)
            padded = nbytes + (-nbytes % BLOCK)
            yield pos, hdr, pos + len(hdr), padded
            pos += len(hdr) + padded


def finalize_checksums(path: str, *, datasums: dict[int, int] | None = None) -> None:
    """Fill the CHECKSUM and DATASUM cards of every HDU of a closed FITS file, in place.

    Parameters
    ----------
    path : str
        A FITS file whose HDUs all carry the placeholder cards (:func:`add_checksum_placeholders`
        or :class:`RawImageWriter`).
    datasums : dict, optional
        HDU index -> data checksum already known (the large images); other HDUs' data are read.

    Raises
    ------
    ValueError
        An HDU lacks the placeholder cards.
    """
    datasums = datasums or {}
    updates = []
    with open(path, "rb") as f:
        for k, (start, hdr, dstart, dlen) in enumerate(_iter_hdus(path)):
            if k in datasums:
                dsum = datasums[k]
            elif dlen:
                f.seek(dstart)
                dsum = ones_sum(f.read(dlen))
            else:
                dsum = 0
            keys = [hdr[i:i + 8] for i in range(0, len(hdr), 80)]
            try:
                ic, idat = keys.index(b"CHECKSUM"), keys.index(b"DATASUM ")
            except ValueError:
                raise ValueError(f"{path}: HDU {k} has no CHECKSUM/DATASUM placeholder") from None
            buf = bytearray(hdr)
            buf[80 * idat:80 * idat + 80] = card("DATASUM", str(dsum) if dsum else "         0", _DATASUM_COMMENT)
            buf[80 * ic:80 * ic + 80] = card("CHECKSUM", _ZERO_CHECKSUM, _CHECKSUM_COMMENT)
            total = ones_add(ones_sum(bytes(buf)), dsum)
            buf[80 * ic:80 * ic + 80] = card("CHECKSUM", encode_checksum(total), _CHECKSUM_COMMENT)
            updates.append((start, bytes(buf)))
    fd = os.open(path, os.O_RDWR)
    try:
        for start, buf in updates:
            os.pwrite(fd, buf, start)
    finally:
        os.close(fd)
