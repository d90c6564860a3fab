# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A ``metric_window`` message straight to its binary COPY row of ``metric_window_inbox``.

The metrics-store sink only appends partials to the inbox, so its speed is
that of a COPY plus whatever Python does per row. Decoding each message into
a dict and letting psycopg dump it again costs several times the COPY itself;
this module reads the Avro body and writes PostgreSQL's binary COPY tuple in
one pass, in C, with no Python object per field.

It handles only what it can prove correct: messages written with the current
schema version (its single-object header is passed in), whose partial would
pass ``check_part`` (a 1-minute window on a minute boundary, a partition >= 0,
finite sums), with ASCII strings without NUL, timestamps between 1970 and
9999 and a cost below a billion dollars. For anything else it returns
``None`` and the sink takes the Python path, which accepts the message or
raises the error that dead-letters it. ``tests/unit/test_inbox_copy.py``
checks both paths give the same rows on random partials.

Field order below is ``schemas/avro/metric_window/v2.avsc``; the test checks it.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcmp, memcpy

cdef extern from "math.h" nogil:
    bint isfinite(double x)
    long long llrint(double x)

#: The inbox columns in the order of the tuples written (Avro order, minus
#: ``resolution`` and ``window_seconds``, which are checked, not stored).
COLUMNS = (
    "series", "window_start", "partition", "project", "model", "provider", "prompt_version", "kind",
    "cohort", "variant", "request_count", "error_count", "input_tokens", "output_tokens",
    "cached_tokens", "usage_count", "cost_usd", "cost_count", "feedback_count", "rating_sum",
    "rating_count", "thumbs_up", "thumbs_count", "late_events", "p50_ms", "p90_ms", "p95_ms",
    "p99_ms", "sketch", "final", "emitted_at", "cost_sq_sum", "rating_sq_sum", "latency_ms_sum",
    "latency_ms_sq_sum",
)
#: (name, Avro type) of every field read, to check against the schema.
AVRO_FIELDS = (
    ("series", "string"), ("resolution", "string"), ("window_start", "timestamp-micros"),
    ("window_seconds", "int"), ("partition", "int"), ("project", "string"), ("model", "string"),
    ("provider", "string"), ("prompt_version", "string"), ("kind", "string"), ("cohort", "string"),
    ("variant", "string"), ("request_count", "long"), ("error_count", "long"), ("input_tokens", "long"),
    ("output_tokens", "long"), ("cached_tokens", "long"), ("usage_count", "long"), ("cost_usd", "double"),
    ("cost_count", "long"), ("feedback_count", "long"), ("rating_sum", "double"), ("rating_count", "long"),
    ("thumbs_up", "long"), ("thumbs_count", "long"), ("late_events", "long"), ("p50_ms", "null|double"),
    ("p90_ms", "null|double"), ("p95_ms", "null|double"), ("p99_ms", "null|double"), ("sketch", "bytes"),
    ("final", "boolean"), ("emitted_at", "timestamp-micros"), ("cost_sq_sum", "double"),
    ("rating_sq_sum", "double"), ("latency_ms_sum", "double"), ("latency_ms_sq_sum", "double"),
)
#: Start of a binary COPY stream: signature, flags, header extension length.
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"

cdef enum:
    HEADER = 10                                # Avro single-object header: C3 01 + 8-byte fingerprint
    N_COLUMNS = 35
cdef int64_t MINUTE_US = 60000000
cdef int64_t MAX_MICROS = 253402300800000000   # 10000-01-01: Python's datetime ends before it
cdef int64_t PG_EPOCH_US = 946684800000000     # PostgreSQL counts from 2000-01-01
cdef int64_t MAX_NANOS = 999999999999999999    # numeric(18,9)


cdef struct Reader:
    const uint8_t *p
    const uint8_t *end
    bint bad


cdef struct Writer:
    uint8_t *p


cdef inline int64_t read_long(Reader *r) noexcept:
    cdef uint64_t acc = 0
    cdef int shift = 0
    cdef uint8_t b
    while True:
        if r.p >= r.end or shift > 63:
            r.bad = True
            return 0
        b = r.p[0]
        r.p += 1
        if shift == 63 and b > 1:  # more than 64 bits
            r.bad = True
            return 0
        acc |= (<uint64_t>(b & 0x7F)) << shift
        if not (b & 0x80):
            break
        shift += 7
    return <int64_t>((acc >> 1) ^ (0 - (acc & 1)))


cdef inline double read_double(Reader *r) noexcept:
    cdef double d = 0.0
    cdef uint64_t bits = 0
    cdef int i
    if r.end - r.p < 8:
        r.bad = True
        return 0.0
    for i in range(8):  # little-endian on the wire, whatever the host
        bits |= (<uint64_t>r.p[i]) << (8 * i)
    memcpy(&d, &bits, 8)
    r.p += 8
    return d


cdef inline const uint8_t *read_span(Reader *r, int64_t *size) noexcept:
    """Length-prefixed bytes: a pointer into the message and their size."""
    cdef int64_t n = read_long(r)
    cdef const uint8_t *start = r.p
    if r.bad or n < 0 or n > r.end - r.p:
        r.bad = True
        return NULL
    r.p += n
    size[0] = n
    return start


cdef inline bint plain_ascii(const uint8_t *s, int64_t n) noexcept:
    cdef int64_t i
    for i in range(n):
        if s[i] == 0 or s[i] >= 0x80:
            return False
    return True


cdef inline void put16(Writer *w, int v) noexcept:
    w.p[0] = (v >> 8) & 0xFF
    w.p[1] = v & 0xFF
    w.p += 2


cdef inline void put32(Writer *w, int64_t v) noexcept:
    cdef uint64_t u = <uint64_t>v
    w.p[0] = (u >> 24) & 0xFF
    w.p[1] = (u >> 16) & 0xFF
    w.p[2] = (u >> 8) & 0xFF
    w.p[3] = u & 0xFF
    w.p += 4


cdef inline void put64(Writer *w, int64_t v) noexcept:
    cdef uint64_t u = <uint64_t>v
    cdef int i
    for i in range(8):
        w.p[i] = (u >> (56 - 8 * i)) & 0xFF
    w.p += 8


cdef inline void put_bigint(Writer *w, int64_t v) noexcept:
    put32(w, 8)
    put64(w, v)


cdef inline void put_float8(Writer *w, double d) noexcept:
    cdef int64_t bits
    memcpy(&bits, &d, 8)
    put_bigint(w, bits)  # a float8 is its IEEE bits, big-endian


cdef inline void put_bytes(Writer *w, const uint8_t *s, int64_t n) noexcept:
    put32(w, n)
    memcpy(w.p, s, n)
    w.p += n


cdef inline void put_numeric_nanos(Writer *w, int64_t nanos) noexcept:
    """``nanos`` / 1e9 as a binary numeric with scale 9 (base-10000 digits)."""
    cdef uint64_t m = <uint64_t>(-nanos if nanos < 0 else nanos)
    cdef uint64_t whole = m // 1000000000
    cdef uint64_t frac = (m % 1000000000) * 1000  # 12 decimals: three whole base-10000 digits
    cdef int digits[6]
    cdef int first = 0
    cdef int last = 5
    cdef int i
    digits[0] = <int>(whole // 100000000)
    digits[1] = <int>((whole // 10000) % 10000)
    digits[2] = <int>(whole % 10000)
    digits[3] = <int>(frac // 100000000)
    digits[4] = <int>((frac // 10000) % 10000)
    digits[5] = <int>(frac % 10000)
    while first <= last and digits[first] == 0:
        first += 1
    while last >= first and digits[last] == 0:
        last -= 1
    cdef int ndigits = last - first + 1 if first <= last else 0
    put32(w, 8 + 2 * ndigits)
    put16(w, ndigits)
    put16(w, (2 - first) if ndigits else 0)      # weight: digits[2] is 10000^0
    put16(w, 0x4000 if nanos < 0 and ndigits else 0)
    put16(w, 9)                                   # display scale of numeric(18,9)
    for i in range(first, last + 1):
        put16(w, digits[i])


cdef inline bint in_range_micros(int64_t us) noexcept:
    return 0 <= us < MAX_MICROS


def copy_row(bytes value not None, bytes header not None):
    """The binary COPY tuple (``COLUMNS`` order) of one ``metric_window`` message, or ``None``.

    ``header`` is the single-object header of the current schema version;
    ``None`` means "use the Python path" (another version, or a value this
    fast path does not vouch for: the Python path decides and explains).

    Examples
    --------
    >>> from schemas.codec import default_codec, encode
    >>> from schemas.samples import sample
    >>> header = encode("metric_window", sample("metric_window"))[:10]
    >>> row = copy_row(encode("metric_window", sample("metric_window")), header)
    >>> int.from_bytes(row[:2], "big") == len(COLUMNS)
    True
    >>> copy_row(encode("metric_window", sample("metric_window", resolution="1h", window_seconds=3600)), header) is None
    True
    """
    return _copy_row(value, header)


cdef object _copy_row(bytes value, bytes header):
    cdef Py_ssize_t size = PyBytes_GET_SIZE(value)
    if size < HEADER or PyBytes_GET_SIZE(header) != HEADER:
        return None
    cdef const uint8_t *data = <const uint8_t *>PyBytes_AS_STRING(value)
    if memcmp(data, PyBytes_AS_STRING(header), HEADER) != 0:
        return None
    cdef Reader r
    r.p = data + HEADER
    r.end = data + size
    r.bad = False
    # Worst case per field: a 4-byte length where Avro had a 1-byte one, an
    # 8-byte value where Avro had 1 byte, a numeric (20 bytes) for a double.
    out = PyBytes_FromStringAndSize(NULL, size + 2 + N_COLUMNS * 12 + 32)
    cdef Writer w
    w.p = <uint8_t *>PyBytes_AS_STRING(out)
    cdef uint8_t *start = w.p
    cdef const uint8_t *s
    cdef int64_t n, v
    cdef double d
    cdef int i, branch
    put16(&w, N_COLUMNS)

    s = read_span(&r, &n)                          # series
    if r.bad or not plain_ascii(s, n):
        return None
    put_bytes(&w, s, n)
    s = read_span(&r, &n)                          # resolution: must be "1m"
    if r.bad or n != 2 or s[0] != b'1' or s[1] != b'm':
        return None
    v = read_long(&r)                              # window_start
    if r.bad or not in_range_micros(v) or v % MINUTE_US:
        return None
    put_bigint(&w, v - PG_EPOCH_US)
    if read_long(&r) != 60 or r.bad:               # window_seconds
        return None
    v = read_long(&r)                              # partition
    if r.bad or v < 0 or v > 2147483647:
        return None
    put32(&w, 4)
    put32(&w, v)
    for i in range(7):                             # project .. variant
        s = read_span(&r, &n)
        if r.bad or not plain_ascii(s, n):
            return None
        put_bytes(&w, s, n)
    for i in range(6):                             # request_count .. usage_count
        put_bigint(&w, read_long(&r))
    d = read_double(&r)                            # cost_usd
    if r.bad or not isfinite(d) or not (-1e9 < d < 1e9):
        return None
    v = llrint(d * 1e9)                            # as round(cost * 1e9) in Python
    if v > MAX_NANOS or v < -MAX_NANOS:
        return None
    put_numeric_nanos(&w, v)
    put_bigint(&w, read_long(&r))                  # cost_count
    put_bigint(&w, read_long(&r))                  # feedback_count
    d = read_double(&r)                            # rating_sum
    if not isfinite(d):
        return None
    put_float8(&w, d)
    for i in range(4):                             # rating_count .. late_events
        put_bigint(&w, read_long(&r))
    for i in range(4):                             # p50_ms .. p99_ms: union {null, double}
        branch = <int>read_long(&r)
        if branch == 0:
            put32(&w, -1)
        elif branch == 1:
            put_float8(&w, read_double(&r))
        else:
            return None
    s = read_span(&r, &n)                          # sketch
    if r.bad:
        return None
    put_bytes(&w, s, n)
    if r.p >= r.end or r.p[0] > 1:                 # final
        return None
    put32(&w, 1)
    w.p[0] = r.p[0]
    w.p += 1
    r.p += 1
    v = read_long(&r)                              # emitted_at
    if r.bad or not in_range_micros(v):
        return None
    put_bigint(&w, v - PG_EPOCH_US)
    for i in range(4):                             # cost_sq_sum .. latency_ms_sq_sum
        d = read_double(&r)
        if not isfinite(d):
            return None
        put_float8(&w, d)
    if r.bad or r.p != r.end:                      # truncated, or bytes after the record
        return None
    return out[:w.p - start]


def copy_rows(list values not None, bytes header not None):
    """:func:`copy_row` of each value, in one call (what the sink does per batch).

    Examples
    --------
    >>> from schemas.codec import encode
    >>> from schemas.samples import sample
    >>> good = encode("metric_window", sample("metric_window"))
    >>> [type(r).__name__ for r in copy_rows([good, b"junk"], good[:10])]
    ['bytes', 'NoneType']
    """
    return [_copy_row(<bytes>value, header) if type(value) is bytes else None for value in values]
