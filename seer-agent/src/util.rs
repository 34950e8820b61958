//! Small helpers used across the stages (one definition each).

/// Wall-clock time, ms since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The median (the upper one of an even count), sorting `v`; 0 for none.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median of an owned list (see [`median`]).
pub fn median_vec(mut v: Vec<f64>) -> f64 {
    median(&mut v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_none_odd_and_even() {
        assert_eq!(super::median(&mut []), 0.0);
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
