"""Numba kernels over the raw bytes of YFCC lines: field bounds, row checks, URL decoding.

The clean stage's time goes into touching every byte of the input a few times. These kernels
touch each byte about twice: :func:`scan_lines` finds the fields of every line and runs the
per-row checks (dates included) in one pass, then :func:`copy_rows` (through :func:`extract`)
copies the fields of the kept rows into Arrow string buffers, URL-decoding (``+`` -> space,
``%XX`` -> byte) and splitting tag lists as it copies. Floats, the rare date spelled unusually,
and Unicode normalization are left to pyarrow. Searching and copying runs of bytes call libc's
memchr/memcpy (:func:`_memchr`, :func:`_memcpy`): numba's byte loops take a few instructions a
byte where those take a fraction of one.

Positions are byte offsets into ``data``, the uint8 view of an Arrow string array's data
buffer (a split's raw bytes, or the lines Spark's text reader hands over). Kernels are compiled
on first use and cached on disk next to this file (``cache=True``); ``nogil`` lets threads run them.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

TAB, NEWLINE, CR, SPACE, PERCENT, PLUS, COMMA, DOT, MINUS, COLON = (ord(c) for c in "\t\n\r %+,.-:")
ZERO, NINE = ord("0"), ord("9")
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
SHORT_FIELD = 32   # bytes: below this, decoding byte by byte beats calling memchr/memcpy

# What scan_lines found in date_taken.
DATE_MISSING, DATE_PARSED, DATE_UNUSUAL = range(3)
# Reject reasons, as indexes into pipeline.yfcc.REASONS (same order: the first that applies wins).
FIELD_COUNT, OVERSIZE_FIELD, BAD_PHOTO_ID, BAD_ESCAPE, BAD_NUMBER, BAD_DATE = range(6)


@intrinsic
def _memchr(typingctx, data, start, end, byte):
    """The position of the first ``byte`` in data[start:end] (uint8 array), or ``end``: libc's
    memchr, many bytes per instruction, where a byte loop in numba takes a few instructions a byte."""
    sig = types.intp(data, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        array, start, end, byte = args
        i8p, i64 = ir.IntType(8).as_pointer(), ir.IntType(64)
        memchr = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i8p, [i8p, ir.IntType(32), i64]), "memchr")
        base = builder.bitcast(context.make_array(signature.args[0])(context, builder, array).data, i8p)
        found = builder.call(memchr, [builder.gep(base, [start]), builder.trunc(byte, ir.IntType(32)),
                                      builder.sub(end, start)])
        position = builder.sub(builder.ptrtoint(found, i64), builder.ptrtoint(base, i64))
        return builder.select(cgutils.is_null(builder, found), end, position)
    return sig, codegen


@intrinsic
def _memcpy(typingctx, dst, dst_start, src, src_start, count):
    """dst[dst_start:dst_start+count] = src[src_start:src_start+count] for uint8 arrays: libc's
    memcpy (a numba slice assignment costs ~4x more on fields of a few dozen bytes)."""
    sig = types.void(dst, types.intp, src, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        dst, dst_start, src, src_start, count = args
        dst_data = context.make_array(signature.args[0])(context, builder, dst).data
        src_data = context.make_array(signature.args[2])(context, builder, src).data
        cgutils.raw_memcpy(builder, builder.gep(dst_data, [dst_start]), builder.gep(src_data, [src_start]), count, 1)
        return context.get_dummy_value()
    return sig, codegen


# Hex digit value of every byte, -1 where the byte is not a hex digit.
_HEX = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


@njit(cache=True, nogil=True)
def newlines(data):
    """int64[m]: the positions of every newline in data (uint8[bytes]), in order."""
    found = np.empty(len(data) // 256 + 16, np.int64)
    m, p = 0, _memchr(data, 0, len(data), NEWLINE)
    while p < len(data):
        if m == len(found):   # longer lines than guessed: grow
            found = np.concatenate((found, np.empty(len(found), np.int64)))
        found[m] = p
        m += 1
        p = _memchr(data, p + 1, len(data), NEWLINE)
    return found[:m]


@njit(cache=True, nogil=True)
def _escaped_byte(data, p, end):
    """The byte spelled by the two hex digits at data[p:p+2] (both before ``end``), else -1."""
    if p + 2 > end:
        return -1
    hi, lo = _HEX[data[p]], _HEX[data[p + 1]]
    if hi < 0 or lo < 0:
        return -1
    return hi * 16 + lo


@njit(cache=True, nogil=True)
def _decode_char(data, p, end, out, q):
    """Decode the one character at data[p] (a byte, or a ``%XX`` escape) into out[q], as
    ``unquote_plus`` does. Returns (the position after it, whether it was an escaped byte >= 0x80)."""
    b = data[p]
    value = _escaped_byte(data, p + 1, end) if b == PERCENT else -1
    if value >= 0:   # an escaped "+" or "," stays what it is
        out[q] = value
        return p + 3, value >= 0x80
    out[q] = SPACE if b == PLUS else b
    return p + 1, False


@njit(cache=True, nogil=True)
def _digits_value(data, start, end, limit):
    """The value of data[start:end] if it is one or more ASCII digits worth at most ``limit``,
    -1 if it is empty or holds a non-digit, -2 if it is too large."""
    if start >= end:
        return -1
    value = 0
    for p in range(start, end):
        d = data[p] - ZERO
        if d < 0 or d > 9:
            return -1
        if value > (limit - d) // 10:
            # Keep checking the rest: a non-digit later makes it "not a number" rather than "too large".
            for q in range(p + 1, end):
                if data[q] < ZERO or data[q] > NINE:
                    return -1
            return -2
        value = value * 10 + d
    return value


@njit(cache=True, nogil=True)
def _skip_digits(data, p, end):
    """The first position from p on (at most ``end``) that holds no ASCII digit."""
    while p < end and ZERO <= data[p] <= NINE:
        p += 1
    return p


@njit(cache=True, nogil=True)
def _is_decimal(data, start, end):
    """data[start:end] matches ``-?[0-9]+(\\.[0-9]*)?([eE][-+]?[0-9]+)?`` (as the float cast reads it)."""
    digits = start + 1 if start < end and data[start] == MINUS else start
    p = _skip_digits(data, digits, end)
    if p == digits:
        return False
    if p < end and data[p] == DOT:
        p = _skip_digits(data, p + 1, end)
    if p < end and (data[p] == 101 or data[p] == 69):   # e or E
        digits = p + 2 if p + 1 < end and (data[p + 1] == PLUS or data[p + 1] == MINUS) else p + 1
        p = _skip_digits(data, digits, end)
        if p == digits:
            return False
    return p == end


@njit(cache=True, nogil=True)
def _two_digits(data, p, low, high):
    """The number at data[p:p+2] if both are digits and it lies in [low, high], else -1."""
    tens, ones = data[p] - ZERO, data[p + 1] - ZERO
    if not (0 <= tens <= 9 and 0 <= ones <= 9) or not low <= tens * 10 + ones <= high:
        return -1
    return tens * 10 + ones


@njit(cache=True, nogil=True)
def _date_seconds(data, s):
    """Read "YYYY-MM-DD HH:MM:SS" at data[s:s+19] exactly as pyarrow's strptime does (glibc's,
    then proleptic Gregorian arithmetic): ``(state, unix seconds)``, state ``DATE_PARSED``,
    ``DATE_UNUSUAL`` if these 19 bytes are not in that shape (strptime must decide), or -1 if
    they are but strptime rejects them.

    For this shape strptime's range checks are all there is: month 1-12, day 1-31, hour 0-23,
    minute 0-59, second 0-61; a day past the month's end rolls over (Feb 30 is Mar 1).
    """
    for k in range(19):
        b = data[s + k]
        if k == 4 or k == 7:
            shaped = b == MINUS
        elif k == 10:
            shaped = b == SPACE
        elif k == 13 or k == 16:
            shaped = b == COLON
        else:
            shaped = ZERO <= b <= NINE
        if not shaped:
            return DATE_UNUSUAL, 0
    year = _digits_value(data, s, s + 4, 9999)
    month, day = _two_digits(data, s + 5, 1, 12), _two_digits(data, s + 8, 1, 31)
    hour, minute, second = _two_digits(data, s + 11, 0, 23), _two_digits(data, s + 14, 0, 59), \
        _two_digits(data, s + 17, 0, 61)
    if month < 0 or day < 0 or hour < 0 or minute < 0 or second < 0:
        return -1, 0
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    return DATE_PARSED, days * 86400 + hour * 3600 + minute * 60 + second


@njit(cache=True, nogil=True)
def scan_lines(data, line_offsets, n_fields, escaped, max_field_bytes, photo_id_col, line_number_col,
               date_taken_col, date_uploaded_col, accuracy_col, longitude_col, latitude_col, marker_col):
    """Find the fields of every line and run the per-row checks that are byte tests.

    Args:
        data: uint8[bytes], the lines' bytes.
        line_offsets: int32[n+1], line i is data[line_offsets[i]:line_offsets[i+1]]; trailing
            ``\\r``/``\\n`` bytes are its terminator, not part of its last field.
        n_fields: the layout's field count (23 or 25).
        escaped: bool[n_fields], fields that are URL-encoded (checked for malformed ``%`` escapes).
        max_field_bytes: a longer raw field rejects the row (the last one counted with its terminator).
        *_col: the layout's index of each checked field; ``line_number_col`` is -1 when there is none.

    Returns:
        ``(bounds, reason, photo_id, date_taken, date_state, date_uploaded, accuracy, video)``:
        bounds int32[n, n_fields+1], field j of line i is data[bounds[i, j]:bounds[i, j+1] - 1]
        (valid only where the field count is right); reason int8[n], a reject reason code or -1;
        photo_id int64[n]; date_taken int64[n], unix seconds where date_state (int8[n]) is
        ``DATE_PARSED``, while ``DATE_MISSING`` is empty or "null" and ``DATE_UNUSUAL`` a date
        spelled other than "YYYY-MM-DD HH:MM:SS" that the caller must parse with strptime;
        date_uploaded int64[n] (unix seconds) and accuracy int32[n], -1 when empty; video bool[n],
        the marker is 1.
    """
    n = len(line_offsets) - 1
    bounds = np.zeros((n, n_fields + 1), np.int32)
    reason = np.full(n, -1, np.int8)
    photo_id = np.zeros(n, np.int64)
    date_uploaded = np.full(n, -1, np.int64)
    accuracy = np.full(n, -1, np.int32)
    date_taken = np.zeros(n, np.int64)
    date_state = np.full(n, DATE_MISSING, np.int8)
    video = np.zeros(n, np.bool_)
    for i in range(n):
        start, raw_end = line_offsets[i], line_offsets[i + 1]
        end = raw_end
        while end > start and (data[end - 1] == NEWLINE or data[end - 1] == CR):
            end -= 1
        bounds[i, 0] = start
        field, p = 0, start
        while True:
            tab = _memchr(data, p, end, TAB)
            if tab == end:
                break
            field += 1
            if field == n_fields:   # too many fields: no need to look further
                break
            bounds[i, field] = p = tab + 1
        if field + 1 != n_fields:
            reason[i] = FIELD_COUNT
            continue
        bounds[i, n_fields] = end + 1
        row = bounds[i]
        oversize = raw_end - row[n_fields - 1] > max_field_bytes
        for j in range(n_fields - 1):
            oversize |= row[j + 1] - 1 - row[j] > max_field_bytes
        if oversize:
            reason[i] = OVERSIZE_FIELD
            continue
        # At most 19 digits, then the value decides: 19 digits may still exceed int64.
        s, e = row[photo_id_col], row[photo_id_col + 1] - 1
        photo_id[i] = _digits_value(data, s, e, INT64_MAX) if e - s <= 19 else -1
        if photo_id[i] < 0:
            reason[i] = BAD_PHOTO_ID
            continue
        # A "%" not followed by two hex digits in a URL-encoded field: one search over the whole
        # line (a tab or the line end is no hex digit, so an escape never borrows the next field's bytes).
        p = _memchr(data, start, end, PERCENT)
        while p < end and reason[i] < 0:
            if _escaped_byte(data, p + 1, end) < 0:
                field = n_fields - 1
                while row[field] > p:
                    field -= 1
                if escaped[field]:
                    reason[i] = BAD_ESCAPE
            p = _memchr(data, p + 1, end, PERCENT)
        if reason[i] >= 0:
            continue

        ok = True
        s, e = row[date_uploaded_col], row[date_uploaded_col + 1] - 1
        if e > s:
            date_uploaded[i] = _digits_value(data, s, e, INT64_MAX)
            ok &= date_uploaded[i] >= 0
        s, e = row[accuracy_col], row[accuracy_col + 1] - 1
        if e > s:
            value = _digits_value(data, s, e, INT32_MAX)
            accuracy[i] = value
            ok &= value >= 0
        for col in (longitude_col, latitude_col):
            s, e = row[col], row[col + 1] - 1
            ok &= e == s or _is_decimal(data, s, e)
        s, e = row[marker_col], row[marker_col + 1] - 1
        ok &= e - s == 1 and (data[s] == ZERO or data[s] == ZERO + 1)
        video[i] = e - s == 1 and data[s] == ZERO + 1
        if line_number_col >= 0:
            s, e = row[line_number_col], row[line_number_col + 1] - 1
            ok &= _digits_value(data, s, e, INT64_MAX) != -1
        if not ok:
            reason[i] = BAD_NUMBER
            continue

        # "2012-08-18 19:35:14.0": 19 bytes of date and time, then an optional fraction that
        # is dropped; empty or "null" (any case) is a missing date.
        s, e = row[date_taken_col], row[date_taken_col + 1] - 1
        null = e - s == 4 and (data[s] | 32) == 110 and (data[s + 1] | 32) == 117 \
            and (data[s + 2] | 32) == 108 and (data[s + 3] | 32) == 108
        if e == s or null:
            continue
        if e - s > 19:
            fraction = data[s + 19] == DOT and e - s > 20
            for p in range(s + 20, e):
                fraction &= ZERO <= data[p] <= NINE
            if not fraction:
                reason[i] = BAD_DATE
                continue
        state, date_taken[i] = _date_seconds(data, s) if e - s >= 19 else (DATE_UNUSUAL, 0)
        if state < 0:
            reason[i] = BAD_DATE
        date_state[i] = state
    return bounds, reason, photo_id, date_taken, date_state, date_uploaded, accuracy, video


@njit(cache=True, nogil=True)
def _decode(data, start, end, out, q):
    """URL-decode data[start:end] into out[q:], as ``urllib.parse.unquote_plus`` does on bytes
    (a malformed escape stays as it is). Returns (end of the written bytes in out, whether an
    escape produced a byte >= 0x80, the only way decoding can break UTF-8)."""
    high = False
    p = start
    while True:
        if end - p <= SHORT_FIELD:
            # Short: byte by byte costs less than the calls below.
            while p < end:
                p, escaped_high = _decode_char(data, p, end, out, q)
                high |= escaped_high
                q += 1
            return q, high
        # Up to the next "%": copied as is, with every "+" a space (a loop the compiler vectorizes).
        percent = _memchr(data, p, end, PERCENT)
        _memcpy(out, q, data, p, percent - p)
        for x in range(q, q + percent - p):
            out[x] = SPACE if out[x] == PLUS else out[x]
        q += percent - p
        if percent == end:
            return q, high
        p, escaped_high = _decode_char(data, percent, end, out, q)
        high |= escaped_high
        q += 1


@njit(cache=True, nogil=True)
def _valid_utf8(buf, start, end):
    """buf[start:end] is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF),
    exactly what Python's strict UTF-8 decoder accepts."""
    p = start
    while p < end:
        b = buf[p]
        if b < 0x80:
            p += 1
            continue
        if 0xC2 <= b <= 0xDF:
            size, lo, hi = 2, 0x80, 0xBF
        elif 0xE0 <= b <= 0xEF:
            size = 3
            lo = 0xA0 if b == 0xE0 else 0x80
            hi = 0x9F if b == 0xED else 0xBF
        elif 0xF0 <= b <= 0xF4:
            size = 4
            lo = 0x90 if b == 0xF0 else 0x80
            hi = 0x8F if b == 0xF4 else 0xBF
        else:
            return False
        if p + size > end or not lo <= buf[p + 1] <= hi:
            return False
        for k in range(2, size):
            if not 0x80 <= buf[p + k] <= 0xBF:
                return False
        p += size
    return True


@njit(cache=True, nogil=True)
def _raw_sizes(bounds, rows, columns):
    """int64[c]: the raw bytes of each of the fields ``columns`` summed over ``rows``."""
    sizes = np.zeros(len(columns), np.int64)
    for i in rows:
        for m in range(len(columns)):
            sizes[m] += bounds[i, columns[m] + 1] - 1 - bounds[i, columns[m]]
    return sizes


@njit(cache=True, nogil=True)
def copy_rows(data, bounds, rows, columns, decode, tag_columns):
    """Copy fields of the given rows into the buffers of Arrow string arrays: text fields as
    they are or URL-decoded, tag fields split on the raw comma into tags, each URL-decoded.

    Row by row, all fields at once: the fields of one column lie ~500 bytes apart, so copying
    column by column missed the cache on every field, which cost more than the copying itself.
    A comma inside a tag arrives encoded as ``%2C``, so splitting before decoding keeps it; an
    empty tag field has no tags, while ``a,,b`` has an empty one (the caller drops it).

    Args:
        data: uint8[bytes]; bounds: int32[n, F+1], field bounds from :func:`scan_lines`.
        rows: int64[k], the rows to copy; columns: int64[c], text fields; decode: bool[c];
        tag_columns: int64[g], tag fields.

    Returns:
        ``(text, tags)``. text = ``(base, offsets, values, invalid)``: text column m is the
        string array with offsets ``offsets[m]`` (int32[k+1], from 0) into ``values[base[m]:]``
        (uint8); invalid bool[c, k] marks values an escape made invalid UTF-8 (for the caller
        to repair). tags = ``(counts, base, offsets, values, parents, invalid)``: tag column m
        has t = counts[m] tags, the string array with offsets ``offsets[m, :t+1]`` into
        ``values[base[m]:]``, ``parents[m, :t]`` (int32) the row (0..k-1) of each tag and
        ``invalid[m, :t]`` as above.
    """
    k, c, g = len(rows), len(columns), len(tag_columns)
    # Each column writes into its own region of values, as large as its raw bytes (decoding
    # only shrinks a value). Offsets start at 0: some pyarrow 14 kernels (if_else) misread others.
    sizes = _raw_sizes(bounds, rows, columns)
    base, values = np.cumsum(sizes) - sizes, np.empty(sizes.sum(), np.uint8)
    offsets = np.zeros((c, k + 1), np.int32)
    invalid = np.zeros((c, k), np.bool_)
    tag_sizes = _raw_sizes(bounds, rows, tag_columns)
    tag_base, tag_values = np.cumsum(tag_sizes) - tag_sizes, np.empty(tag_sizes.sum(), np.uint8)
    # A field of b bytes has at most b + 1 tags; np.empty leaves the untouched rest unallocated.
    most = tag_sizes.max() + k if g else 0
    tag_offsets = np.empty((g, most + 1), np.int32)
    tag_offsets[:, 0] = 0
    parents = np.empty((g, most), np.int32)
    tag_invalid = np.empty((g, most), np.bool_)
    counts = np.zeros(g, np.int64)
    for r in range(k):
        i = rows[r]
        for m in range(c):
            s, e, q = bounds[i, columns[m]], bounds[i, columns[m] + 1] - 1, base[m] + offsets[m, r]
            if decode[m]:
                end, high = _decode(data, s, e, values, q)
                invalid[m, r] = high and not _valid_utf8(values, q, end)
            else:
                _memcpy(values, q, data, s, e - s)
                end = q + e - s
            offsets[m, r + 1] = end - base[m]
        for m in range(g):
            s, e = bounds[i, tag_columns[m]], bounds[i, tag_columns[m] + 1] - 1
            if e == s:
                continue
            # Tags are a few bytes each: one byte loop that splits and decodes beats a call per tag.
            t, q, high = counts[m], tag_base[m] + tag_offsets[m, counts[m]], False
            p = s
            while p <= e:
                b = data[p] if p < e else COMMA
                if b == COMMA:   # the end of a tag (the field's end closes the last one)
                    tag_invalid[m, t] = high and not _valid_utf8(tag_values, tag_base[m] + tag_offsets[m, t], q)
                    parents[m, t] = r
                    t += 1
                    tag_offsets[m, t] = q - tag_base[m]
                    high = False
                    p += 1
                    continue
                p, escaped_high = _decode_char(data, p, e, tag_values, q)
                high |= escaped_high
                q += 1
            counts[m] = t
    return (base, offsets, values, invalid), (counts, tag_base, tag_offsets, tag_values, parents, tag_invalid)


@njit(cache=True, nogil=True)
def first_tags(codes, parents, keep, n):
    """Each photo's kept tags without repeats, in the order the user gave them.

    Args:
        codes: int[t], tag identities (0..v-1); parents: int[t], the photo (0..n-1, ascending)
            of each tag; keep: bool[v], the identities to keep; n: number of photos.

    Returns:
        ``(offsets, picked)``: int32[n+1] list offsets and int64[u], the codes of the kept tags,
        photo by photo: photo i's are picked[offsets[i]:offsets[i+1]].
    """
    # Photos come in order, so "seen in this photo" is one array of the last photo per code.
    last_photo = np.full(len(keep), -1, np.int64)
    picked = np.empty(len(codes), np.int64)
    offsets = np.zeros(n + 1, np.int32)
    u = 0
    for i in range(len(codes)):
        code, photo = codes[i], parents[i]
        if keep[code] and last_photo[code] != photo:
            last_photo[code] = photo
            picked[u] = code
            u += 1
            offsets[photo + 1] += 1
    for i in range(n):
        offsets[i + 1] += offsets[i]
    return offsets, picked[:u]


def string_buffers(arr: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """The value offsets (int32[n+1], into data) and the data bytes (uint8) of a string array, zero-copy."""
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return offsets, data


def extract(data: np.ndarray, bounds: np.ndarray, rows: np.ndarray, fields: list[int], decode: list[bool],
            tag_fields: list[int]) -> tuple[list[pa.StringArray], list[tuple[pa.StringArray, np.ndarray]]]:
    """Arrow arrays of fields of ``rows`` (see :func:`copy_rows`).

    Args:
        data, bounds: the bytes and field bounds :func:`scan_lines` worked on.
        rows: int64[k]; fields: text field indexes, URL-decoded where ``decode`` says;
        tag_fields: comma-separated tag field indexes.

    Returns:
        ``(text, tags)``: a string[k] per text field, and per tag field ``(tags, parents)``:
        string[t], every decoded tag in field order, and int32[t], the index into ``rows`` each
        came from. Bytes that are not UTF-8 after decoding become U+FFFD, as in
        ``urllib.parse.unquote_plus``.
    """
    (base, offsets, values, invalid), (counts, tag_base, tag_offsets, tag_values, parents, tag_invalid) = copy_rows(
        data, bounds, rows, np.array(fields, np.int64), np.array(decode, np.bool_), np.array(tag_fields, np.int64))
    text = [_string_array(offsets[m], values[base[m]:base[m] + offsets[m, -1]], invalid[m])
            for m in range(len(fields))]
    tags = [(_string_array(tag_offsets[m, :t + 1], tag_values[tag_base[m]:tag_base[m] + tag_offsets[m, t]],
                           tag_invalid[m, :t]), parents[m, :t]) for m, t in enumerate(counts)]
    return text, tags


def _string_array(offsets: np.ndarray, values: np.ndarray, invalid: np.ndarray) -> pa.StringArray:
    """string[n] over int32[n+1] offsets and uint8 values, zero-copy; the values flagged in
    bool[n] ``invalid`` are decoded with U+FFFD for what is not UTF-8."""
    arr = pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(values))
    # Rare (an escape spelled out bytes that are not UTF-8, e.g. Latin-1 %E9): let Python's
    # decoder place the U+FFFDs exactly where unquote_plus would, for those values only.
    if not invalid.any():
        return arr
    rows = np.flatnonzero(invalid)
    fixed = [bytes(values[offsets[r]:offsets[r + 1]]).decode("utf-8", "replace") for r in rows]
    return pc.replace_with_mask(arr, pa.array(invalid), pa.array(fixed, pa.string()))
