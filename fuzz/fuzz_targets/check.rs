//! What every probe reply parser must do on any input (shared by the three targets).
use crate::framing::Frame;

/// `parse` never panics (libFuzzer reports a panic as a crash); a complete reply fits in the
/// input, and parsing just that reply gives the same answer (its end does not depend on what
/// follows it).
pub fn check(data: &[u8], parse: impl Fn(&[u8]) -> Frame) {
    if let Frame::Complete(n) = parse(data) {
        assert!(
            n <= data.len(),
            "length {n} past the input's {}",
            data.len()
        );
        assert_eq!(parse(&data[..n]), Frame::Complete(n), "the reply alone");
    }
}
