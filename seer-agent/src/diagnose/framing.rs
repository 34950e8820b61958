//! Where one complete reply ends in the bytes a probe has read so far (memcached, RESP, HTTP).
//!
//! The bytes come from another process, which may be broken or hostile, so every parser here:
//! never panics (checked arithmetic, no recursion, no indexing past what it checked), does work
//! linear in its input (every loop consumes at least one line), and tells a reply that can never
//! complete ([`Frame::Malformed`], with the reason) from one that needs more bytes
//! ([`Frame::Incomplete`]): a declared length over [`MAX_REPLY`], a number that is not one, a
//! line longer than [`MAX_LINE`], RESP nested deeper than [`MAX_DEPTH`].
//!
//! This file uses nothing but `std` so that the fuzz targets (`fuzz/` at the repository root)
//! can include it with `#[path]`: seer-agent is a binary crate, with no library to depend on.

/// The largest reply a probe accepts (a declared length or the bytes read): a probe request is
/// a `PING`, a `version` or a `GET` of a small page; more is not the protocol the probe speaks.
pub const MAX_REPLY: usize = 16 << 20;
/// The longest line (RESP or memcached header, HTTP chunk size) or HTTP head, CRLFs included.
pub const MAX_LINE: usize = 64 << 10;
/// The deepest nesting of RESP aggregates (arrays, maps, sets, pushes, attributes).
pub const MAX_DEPTH: usize = 64;

/// What the bytes read so far hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One complete reply: its length (the bytes after it are not part of it).
    Complete(usize),
    /// The start of a reply: read more.
    Incomplete,
    /// Not the start of any reply the probe accepts, whatever follows: why.
    Malformed(String),
}

impl Frame {
    fn of(r: Parsed) -> Frame {
        match r {
            Ok(Some(n)) => Frame::Complete(n),
            Ok(None) => Frame::Incomplete,
            Err(why) => Frame::Malformed(why),
        }
    }
}

/// Ok(Some(end)): complete; Ok(None): incomplete; Err: malformed.
type Parsed = Result<Option<usize>, String>;

/// A short printable excerpt of untrusted bytes, for an error message.
fn show(b: &[u8]) -> String {
    const MAX: usize = 24;
    let s = String::from_utf8_lossy(&b[..b.len().min(MAX)]);
    let mut s: String = s.escape_debug().collect();
    if b.len() > MAX {
        s.push_str("...");
    }
    s
}

fn mib(n: usize) -> usize {
    n >> 20
}

fn too_large() -> String {
    format!("reply larger than {} MiB", mib(MAX_REPLY))
}

/// `at + n`, or why not: over [`MAX_REPLY`] (and so never `usize` overflow).
fn advance(at: usize, n: usize) -> Result<usize, String> {
    at.checked_add(n)
        .filter(|&e| e <= MAX_REPLY)
        .ok_or_else(too_large)
}

/// The end (after `pat`) of the first `pat` at or after `from`, looking no further than `limit`
/// bytes (`pat` included): Ok(None) when it may still come, Err when it is past the limit.
fn find(
    b: &[u8],
    from: usize,
    pat: &[u8],
    limit: usize,
    what: &str,
) -> Result<Option<usize>, String> {
    let Some(rest) = b.get(from..) else {
        return Ok(None);
    };
    let window = &rest[..rest.len().min(limit)];
    match window.windows(pat.len()).position(|w| w == pat) {
        Some(p) => Ok(Some(from + p + pat.len())),
        None if window.len() < limit => Ok(None),
        None => Err(format!("{what} longer than {} KiB", limit >> 10)),
    }
}

/// The end of the CRLF-terminated line at `from` (after its CRLF).
fn line_end(b: &[u8], from: usize) -> Result<Option<usize>, String> {
    find(b, from, b"\r\n", MAX_LINE, "a line")
}

/// A decimal length no larger than [`MAX_REPLY`].
fn dec_len(s: &[u8], what: &str) -> Result<usize, String> {
    let s = s.trim_ascii();
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(format!("{what} {:?} is not a number", show(s)));
    }
    let digits = &s[s.iter().position(|&c| c != b'0').unwrap_or(s.len())..];
    // Eight digits hold every length up to MAX_REPLY, and parse without overflow.
    let n = if digits.len() > 8 {
        usize::MAX
    } else {
        digits
            .iter()
            .fold(0, |n, &c| n * 10 + usize::from(c - b'0'))
    };
    if n > MAX_REPLY {
        return Err(format!(
            "{what} {} exceeds the {} MiB limit",
            show(s),
            mib(MAX_REPLY)
        ));
    }
    Ok(n)
}

/// A hexadecimal length (an HTTP chunk size) no larger than [`MAX_REPLY`].
fn hex_len(s: &[u8], what: &str) -> Result<usize, String> {
    let s = s.trim_ascii();
    if s.is_empty() || !s.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!("{what} {:?} is not a hex number", show(s)));
    }
    let digits = &s[s.iter().position(|&c| c != b'0').unwrap_or(s.len())..];
    let n = if digits.len() > 7 {
        usize::MAX
    } else {
        digits.iter().fold(0, |n, &c| {
            let d = (c as char).to_digit(16).unwrap_or(0) as usize;
            n * 16 + d
        })
    };
    if n > MAX_REPLY {
        return Err(format!(
            "{what} {} exceeds the {} MiB limit",
            show(s),
            mib(MAX_REPLY)
        ));
    }
    Ok(n)
}

/// Length of the complete memcached reply at the start of `b`: the text protocol's replies to
/// `version` are one line; to `get`, values then `END`, or an error line.
pub fn memcached_reply_len(b: &[u8], get: bool) -> Frame {
    Frame::of(memcached(b, get))
}

fn memcached(b: &[u8], get: bool) -> Parsed {
    let Some(first) = line_end(b, 0)? else {
        return Ok(None);
    };
    let l = &b[..first];
    if !get || l.starts_with(b"END") || l.starts_with(b"ERROR") || l.ends_with(b"ERROR\r\n") {
        return Ok(Some(first));
    }
    if l.starts_with(b"SERVER_ERROR") || l.starts_with(b"CLIENT_ERROR") {
        return Ok(Some(first));
    }
    // VALUE <key> <flags> <bytes> [<cas unique>]\r\n<data>\r\n ... END\r\n
    let mut at = 0;
    loop {
        let Some(end) = line_end(b, at)? else {
            return Ok(None);
        };
        let line = &b[at..end];
        if line == b"END\r\n" {
            return Ok(Some(end));
        }
        let mut words = line[..line.len() - 2]
            .split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty());
        if words.next() != Some(b"VALUE".as_slice()) {
            return Err(format!("expected VALUE or END, got {:?}", show(line)));
        }
        let Some(bytes) = words.nth(2) else {
            return Err(format!("a VALUE line without a length: {:?}", show(line)));
        };
        let bytes = dec_len(bytes, "value length")?;
        let data_end = advance(end, bytes)?;
        let next = advance(data_end, 2)?;
        let Some(tail) = b.get(data_end..next) else {
            return Ok(None);
        };
        if tail != b"\r\n" {
            return Err(format!("a value of {bytes} bytes not followed by CRLF"));
        }
        at = next;
    }
}

/// Length of the one complete RESP (2 or 3) value at the start of `b`. Iterative: a stack of
/// the items each open aggregate still needs, at most [`MAX_DEPTH`] deep.
pub fn resp_len(b: &[u8]) -> Frame {
    Frame::of(resp(b))
}

fn resp(b: &[u8]) -> Parsed {
    let mut open: Vec<usize> = Vec::new();
    let mut at = 0;
    loop {
        let Some(&kind) = b.get(at) else {
            return Ok(None);
        };
        let Some(line) = line_end(b, at)? else {
            return Ok(None);
        };
        let num = || -> Result<i64, String> {
            let t = &b[at + 1..line - 2];
            std::str::from_utf8(t)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("RESP length {:?} is not a number", show(t)))
        };
        // Where the value that starts at `at` ends, unless it opens an aggregate.
        let end = match kind {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => line,
            b'$' | b'=' | b'!' => match num()? {
                -1 => line, // RESP2 null bulk string
                n if n < 0 => return Err(format!("RESP length {n} is negative")),
                n => {
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    if n > MAX_REPLY {
                        return Err(format!(
                            "RESP bulk length {n} exceeds the {} MiB limit",
                            mib(MAX_REPLY)
                        ));
                    }
                    let data_end = advance(line, n)?;
                    let next = advance(data_end, 2)?;
                    let Some(tail) = b.get(data_end..next) else {
                        return Ok(None);
                    };
                    if tail != b"\r\n" {
                        return Err(format!(
                            "a RESP bulk string of {n} bytes not followed by CRLF"
                        ));
                    }
                    next
                }
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => match num()? {
                -1 => line, // RESP2 null array
                n if n < 0 => return Err(format!("RESP length {n} is negative")),
                n => {
                    // Every item takes at least three bytes ("_\r\n"): no more than MAX_REPLY.
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    let items = match kind {
                        // n pairs; an attribute's pairs are followed by the value they describe.
                        b'%' => n.checked_mul(2),
                        b'|' => n.checked_mul(2).and_then(|i| i.checked_add(1)),
                        _ => Some(n),
                    };
                    let items = items.filter(|&i| i <= MAX_REPLY).ok_or_else(|| {
                        format!(
                            "RESP aggregate of {n} exceeds the {} MiB limit",
                            mib(MAX_REPLY)
                        )
                    })?;
                    if items == 0 {
                        line
                    } else if open.len() >= MAX_DEPTH {
                        return Err(format!("RESP nested deeper than {MAX_DEPTH}"));
                    } else {
                        open.push(items);
                        at = line;
                        continue;
                    }
                }
            },
            // Not RESP (an inline error from something else): the line is the reply.
            _ if open.is_empty() => line,
            _ => return Err(format!("RESP type byte {:?} unknown", show(&[kind]))),
        };
        at = end;
        // One value done: it completes the aggregates it was the last item of.
        loop {
            match open.last_mut() {
                None => return Ok(Some(at)),
                Some(1) => {
                    open.pop();
                }
                Some(left) => {
                    *left -= 1;
                    break;
                }
            }
        }
    }
}

/// Length of the complete HTTP/1.x response at the start of `b`, for a request that was not
/// HEAD: head, then `Content-Length` bytes, or chunks up to the last one; a response with
/// neither ends at its head (1xx/204/304, or a server that would close).
pub fn http_reply_len(b: &[u8]) -> Frame {
    Frame::of(http(b))
}

fn http(b: &[u8]) -> Parsed {
    const PROTO: &[u8] = b"HTTP/";
    let n = b.len().min(PROTO.len());
    if b[..n] != PROTO[..n] {
        return Err(format!("not an HTTP response: {:?}", show(b)));
    }
    let Some(head) = find(b, 0, b"\r\n\r\n", MAX_LINE, "the response head")? else {
        return Ok(None);
    };
    let mut len: Option<usize> = None;
    let mut chunked = false;
    // Header lines, as bytes: a value may be any octet (obs-text), not only UTF-8.
    for h in b[..head - 4].split(|&c| c == b'\n').skip(1) {
        let Some(colon) = h.iter().position(|&c| c == b':') else {
            continue;
        };
        let (k, v) = (h[..colon].trim_ascii(), h[colon + 1..].trim_ascii());
        if k.eq_ignore_ascii_case(b"content-length") {
            let n = dec_len(v, "Content-Length")?;
            if len.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            len = Some(n);
        } else if k.eq_ignore_ascii_case(b"transfer-encoding")
            && v.to_ascii_lowercase().windows(7).any(|w| w == b"chunked")
        {
            chunked = true;
        }
    }
    if !chunked {
        let end = advance(head, len.unwrap_or(0))?;
        return Ok((b.len() >= end).then_some(end));
    }
    // <size in hex>[;extensions]\r\n<data>\r\n ... 0\r\n[trailers]\r\n
    let mut at = head;
    loop {
        let Some(e) = find(b, at, b"\r\n", MAX_LINE, "a chunk-size line")? else {
            return Ok(None);
        };
        let size_line = &b[at..e - 2];
        let size = size_line.split(|&c| c == b';').next().unwrap_or(size_line);
        let size = hex_len(size, "chunk size")?;
        if size == 0 {
            // Optional trailers, then an empty line.
            if b.get(e..e + 2) == Some(b"\r\n".as_slice()) {
                return Ok(Some(e + 2));
            }
            return find(b, e, b"\r\n\r\n", MAX_LINE, "the trailers");
        }
        let data_end = advance(e, size)?;
        let next = advance(data_end, 2)?;
        let Some(tail) = b.get(data_end..next) else {
            return Ok(None);
        };
        if tail != b"\r\n" {
            return Err(format!("a chunk of {size} bytes not followed by CRLF"));
        }
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    const C: fn(usize) -> Frame = Frame::Complete;
    const I: Frame = Frame::Incomplete;

    fn malformed(f: Frame) -> String {
        match f {
            Frame::Malformed(why) => why,
            other => panic!("expected a malformed reply, got {other:?}"),
        }
    }

    /// Runs `f` in a thread with a small stack (where deep recursion overflows quickly);
    /// panics when it panicked or has not returned within two seconds.
    fn settles<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let _ = tx.send(f());
            })
            .expect("spawn");
        rx.recv_timeout(Duration::from_secs(2))
            .expect("the parser panicked or did not return in time")
    }

    #[test]
    fn memcached_framing() {
        assert_eq!(memcached_reply_len(b"VERSION 1.6.18\r\n", false), C(16));
        assert_eq!(memcached_reply_len(b"VERSION 1.6", false), I);
        assert_eq!(memcached_reply_len(b"END\r\n", true), C(5));
        let hit = b"VALUE k 0 5\r\nEND\r\n\r\nEND\r\n";
        // The value itself may contain "END\r\n": its length, not its text, decides.
        assert_eq!(memcached_reply_len(hit, true), C(hit.len()));
        assert_eq!(memcached_reply_len(&hit[..hit.len() - 1], true), I);
        assert_eq!(memcached_reply_len(b"VALUE k 0 5\r\nab", true), I);
        assert_eq!(memcached_reply_len(b"SERVER_ERROR oom\r\n", true), C(18));
        let cas = b"VALUE k 3 2 77\r\nab\r\nVALUE j 0 0\r\n\r\nEND\r\n";
        assert_eq!(memcached_reply_len(cas, true), C(cas.len()));
    }

    #[test]
    fn resp_framing() {
        assert_eq!(resp_len(b"+PONG\r\n"), C(7));
        assert_eq!(resp_len(b"+PON"), I);
        assert_eq!(resp_len(b"-ERR unknown\r\n"), C(14));
        assert_eq!(resp_len(b"$5\r\nhello\r\n"), C(11));
        assert_eq!(resp_len(b"$5\r\nhel"), I);
        assert_eq!(resp_len(b"$-1\r\n"), C(5));
        assert_eq!(resp_len(b"*-1\r\n"), C(5));
        assert_eq!(resp_len(b"*0\r\n"), C(4));
        // A bulk string containing CRLF is read by length.
        assert_eq!(resp_len(b"$4\r\na\r\nb\r\n"), C(10));
        let arr = b"*2\r\n$1\r\na\r\n:42\r\n";
        assert_eq!(resp_len(arr), C(arr.len()));
        assert_eq!(resp_len(&arr[..arr.len() - 2]), I);
        let map = b"%2\r\n+a\r\n*1\r\n:1\r\n+b\r\n_\r\n";
        assert_eq!(resp_len(map), C(map.len()));
        // An attribute, then the value it describes.
        let attr = b"|1\r\n+ttl\r\n:3\r\n$2\r\nhi\r\n";
        assert_eq!(resp_len(attr), C(attr.len()));
        // Something that is not RESP: its first line.
        assert_eq!(resp_len(b"HTTP/1.1 400\r\n\r\n"), C(14));
    }

    #[test]
    fn http_framing() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(http_reply_len(r), C(r.len()));
        assert_eq!(http_reply_len(&r[..r.len() - 1]), I);
        let r = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(http_reply_len(r), C(r.len()));
        let r = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(http_reply_len(r), C(r.len()));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(http_reply_len(r), C(r.len()));
        assert_eq!(http_reply_len(&r[..r.len() - 2]), I);
        let r =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(http_reply_len(r), C(r.len()));
        assert_eq!(http_reply_len(b"HTTP/1.1 200 OK\r\nContent-Le"), I);
        assert_eq!(http_reply_len(b"HTT"), I);
        // A header value that is not UTF-8 (obs-text) is still a header.
        let r = b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(http_reply_len(r), C(r.len()));
    }

    // Issue 14, finding 2: each of these panicked ("attempt to add/multiply with overflow"),
    // looped for ever (release builds), overflowed the stack, or waited for bytes that could
    // never make a reply.

    #[test]
    fn a_huge_chunk_size_is_malformed() {
        let r = settles(|| {
            http_reply_len(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffec\r\nab",
            )
        });
        assert_eq!(
            malformed(r),
            "chunk size ffffffffffffffec exceeds the 16 MiB limit"
        );
        let r = http_reply_len(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000001\r\n");
        assert!(malformed(r).contains("exceeds the 16 MiB limit"));
        // Leading zeros are no size.
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000001\r\nx\r\n0\r\n\r\n";
        assert_eq!(http_reply_len(r), C(r.len()));
    }

    #[test]
    fn a_huge_content_length_is_malformed() {
        let r = settles(|| {
            http_reply_len(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n")
        });
        assert_eq!(
            malformed(r),
            "Content-Length 18446744073709551615 exceeds the 16 MiB limit"
        );
        let r = http_reply_len(b"HTTP/1.1 200 OK\r\nContent-Length: 16777200\r\n\r\n");
        assert_eq!(malformed(r), "reply larger than 16 MiB");
    }

    #[test]
    fn a_huge_memcached_value_length_is_malformed() {
        let r = settles(|| memcached_reply_len(b"VALUE k 0 18446744073709551615\r\nEND\r\n", true));
        assert_eq!(
            malformed(r),
            "value length 18446744073709551615 exceeds the 16 MiB limit"
        );
    }

    #[test]
    fn huge_resp_lengths_are_malformed() {
        let r = settles(|| resp_len(b"$9223372036854775807\r\nab\r\n"));
        assert!(malformed(r).contains("exceeds the 16 MiB limit"));
        let r = settles(|| resp_len(b"%4611686018427387904\r\n"));
        assert!(malformed(r).contains("exceeds the 16 MiB limit"));
        let r = settles(|| resp_len(b"*9223372036854775807\r\n"));
        assert!(malformed(r).contains("exceeds the 16 MiB limit"));
        assert!(malformed(resp_len(b"$-5\r\n")).contains("negative"));
        assert!(malformed(resp_len(b"*-2\r\n")).contains("negative"));
    }

    #[test]
    fn deep_resp_nesting_is_malformed_not_a_stack_overflow() {
        let r = settles(|| resp_len(&b"*1\r\n".repeat(1_000_000)));
        assert_eq!(malformed(r), "RESP nested deeper than 64");
        // 64 levels are fine.
        let mut ok = b"*1\r\n".repeat(64);
        ok.extend_from_slice(b":1\r\n");
        assert_eq!(resp_len(&ok), C(ok.len()));
    }

    #[test]
    fn what_can_never_complete_is_malformed_not_incomplete() {
        let chunked = |rest: &[u8]| {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(rest);
            http_reply_len(&r)
        };
        assert!(malformed(chunked(b"zz\r\n")).contains("not a hex number"));
        assert!(malformed(chunked(b"\r\n")).contains("not a hex number"));
        assert!(malformed(chunked(b"2\r\nabcd")).contains("not followed by CRLF"));
        let r = http_reply_len(b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n");
        assert!(malformed(r).contains("not a number"));
        let r =
            http_reply_len(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(malformed(r).contains("conflicting"));
        assert!(malformed(http_reply_len(b"-ERR unknown command\r\n")).contains("not an HTTP"));
        // A head that never ends.
        let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
        r.resize(MAX_LINE + 1, b'a');
        assert!(malformed(http_reply_len(&r)).contains("longer than 64 KiB"));

        assert!(malformed(memcached_reply_len(b"VALUE k 0 x\r\n", true)).contains("not a number"));
        assert!(malformed(memcached_reply_len(b"VALUE k\r\n", true)).contains("without a length"));
        assert!(malformed(memcached_reply_len(b"VALUE k 0 1\r\nab\r\n", true)).contains("CRLF"));
        assert!(
            malformed(memcached_reply_len(b"VALUE k 0 1\r\na\r\nHELLO\r\n", true))
                .contains("expected VALUE or END")
        );
        assert!(malformed(memcached_reply_len(&[b'a'; MAX_LINE], false)).contains("a line"));

        assert!(malformed(resp_len(b"$x\r\n")).contains("not a number"));
        assert!(malformed(resp_len(b"*1\r\n?\r\n")).contains("unknown"));
        assert!(malformed(resp_len(b"$1\r\nab\r\n")).contains("not followed by CRLF"));
        assert!(malformed(resp_len(&[b'+'; MAX_LINE])).contains("a line"));
    }

    // Properties: on any bytes, no parser panics, and a complete reply fits in its input and
    // ends where it ends whatever follows it.

    fn check(b: &[u8], parse: impl Fn(&[u8]) -> Frame) -> Result<(), TestCaseError> {
        if let Frame::Complete(n) = parse(b) {
            prop_assert!(n <= b.len(), "length {} past the input's {}", n, b.len());
            prop_assert_eq!(parse(&b[..n]), Frame::Complete(n));
        }
        Ok(())
    }

    /// Bytes made mostly of the protocols' own pieces, where the parsers' corner cases are.
    fn pieces() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(b"\r\n\r\n".to_vec()),
            Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Content-Length: ".to_vec()),
            Just(b"VALUE k 0 ".to_vec()),
            Just(b"END\r\n".to_vec()),
            Just(b"ffffffffffffffec".to_vec()),
            Just(b"18446744073709551615".to_vec()),
            Just(b"-1".to_vec()),
            "[*$%|~>+:_=!;-]".prop_map(String::into_bytes),
            "[0-9a-f]{1,3}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    /// A RESP value and its encoding.
    fn resp_value() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            "[a-zA-Z ]{0,8}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
            "[a-zA-Z ]{0,8}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
            any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
            Just(b"_\r\n".to_vec()),
            Just(b"$-1\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|d| {
                let mut v = format!("${}\r\n", d.len()).into_bytes();
                v.extend_from_slice(&d);
                v.extend_from_slice(b"\r\n");
                v
            }),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            (
                prop_oneof![Just('*'), Just('~'), Just('>'), Just('%'), Just('|')],
                proptest::collection::vec(inner, 0..8),
            )
                .prop_map(|(kind, mut items)| {
                    let n = match kind {
                        '%' => {
                            items.truncate(items.len() / 2 * 2);
                            items.len() / 2
                        }
                        '|' if items.is_empty() => {
                            items.push(b"+v\r\n".to_vec());
                            0
                        }
                        '|' => {
                            items.truncate((items.len() - 1) / 2 * 2 + 1);
                            items.len() / 2
                        }
                        _ => items.len(),
                    };
                    let mut v = format!("{kind}{n}\r\n").into_bytes();
                    v.extend(items.concat());
                    v
                })
        })
    }

    /// A memcached `get` reply and its encoding.
    fn memcached_get_reply() -> impl Strategy<Value = Vec<u8>> {
        let value = (
            "[a-z]{1,8}",
            any::<u32>(),
            // The data may hold the protocol's own words.
            proptest::collection::vec(
                prop_oneof![
                    Just(b"END\r\n".to_vec()),
                    Just(b"\r\n".to_vec()),
                    any::<u8>().prop_map(|c| vec![c])
                ],
                0..12,
            ),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(key, flags, data, cas)| {
                let data = data.concat();
                let cas = cas.map(|c| format!(" {c}")).unwrap_or_default();
                let mut v = format!("VALUE {key} {flags} {}{cas}\r\n", data.len()).into_bytes();
                v.extend_from_slice(&data);
                v.extend_from_slice(b"\r\n");
                v
            });
        prop_oneof![
            proptest::collection::vec(value, 0..4)
                .prop_map(|v| [v.concat(), b"END\r\n".to_vec()].concat()),
            Just(b"SERVER_ERROR out of memory\r\n".to_vec()),
            Just(b"CLIENT_ERROR bad command line format\r\n".to_vec()),
            Just(b"ERROR\r\n".to_vec()),
        ]
    }

    /// An HTTP/1.1 response to a GET and its encoding.
    fn http_reply() -> impl Strategy<Value = Vec<u8>> {
        let headers = proptest::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,20}"), 0..4);
        let body = proptest::collection::vec(any::<u8>(), 0..64);
        let chunks = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..32), 0..4);
        (
            headers,
            prop_oneof![body.prop_map(Ok), chunks.prop_map(Err)],
            any::<bool>(),
        )
            .prop_map(|(headers, body, upper)| {
                let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
                for (k, val) in headers {
                    let k = k.to_ascii_lowercase();
                    if k == "content-length" || k == "transfer-encoding" {
                        continue;
                    }
                    v.extend(format!("{k}: {val}\r\n").into_bytes());
                }
                match body {
                    Ok(body) => {
                        let k = if upper {
                            "CONTENT-LENGTH"
                        } else {
                            "Content-Length"
                        };
                        v.extend(format!("{k}: {}\r\n\r\n", body.len()).into_bytes());
                        v.extend(body);
                    }
                    Err(chunks) => {
                        v.extend(b"Transfer-Encoding: chunked\r\n\r\n");
                        for c in chunks {
                            let ext = if upper { ";x=1" } else { "" };
                            v.extend(format!("{:x}{ext}\r\n", c.len()).into_bytes());
                            v.extend(c);
                            v.extend(b"\r\n");
                        }
                        v.extend(if upper {
                            b"0\r\nX-T: 1\r\n\r\n".as_slice()
                        } else {
                            b"0\r\n\r\n"
                        });
                    }
                }
                v
            })
    }

    /// A valid reply: complete at exactly its length, whatever follows; every proper prefix of
    /// it incomplete (so a probe waits for the rest, and never fails a valid reply).
    fn round_trip(
        r: &[u8],
        after: &[u8],
        parse: impl Fn(&[u8]) -> Frame,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(parse(r), Frame::Complete(r.len()));
        let mut more = r.to_vec();
        more.extend_from_slice(after);
        prop_assert_eq!(parse(&more), Frame::Complete(r.len()));
        for cut in 0..r.len() {
            prop_assert_eq!(
                parse(&r[..cut]),
                Frame::Incomplete,
                "prefix of {} bytes",
                cut
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_parser_panics_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            check(&b, http_reply_len)?;
            check(&b, resp_len)?;
            check(&b, |b| memcached_reply_len(b, true))?;
            check(&b, |b| memcached_reply_len(b, false))?;
        }

        #[test]
        fn no_parser_panics_on_protocol_pieces(b in pieces()) {
            check(&b, http_reply_len)?;
            check(&b, resp_len)?;
            check(&b, |b| memcached_reply_len(b, true))?;
            check(&b, |b| memcached_reply_len(b, false))?;
        }

        #[test]
        fn resp_values_round_trip(r in resp_value(), after in pieces()) {
            round_trip(&r, &after, resp_len)?;
        }

        #[test]
        fn memcached_replies_round_trip(r in memcached_get_reply(), after in pieces()) {
            round_trip(&r, &after, |b| memcached_reply_len(b, true))?;
        }

        #[test]
        fn http_replies_round_trip(r in http_reply(), after in pieces()) {
            round_trip(&r, &after, http_reply_len)?;
        }
    }
}
