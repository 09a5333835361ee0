//! Parsers for the human-friendly values in `sidecar.toml`: durations and byte sizes.

use std::time::Duration;

use toml::Spanned;

use super::Collector;

/// A setting read by `parse` and kept unless `refuse` names what is wrong with it; `None`
/// when it cannot be read or is refused. The problem goes to `c`, so a check reports every
/// bad value at once.
pub(crate) fn checked<T>(
    s: &Spanned<String>,
    key: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
    refuse: impl FnOnce(&T) -> Option<&'static str>,
    c: &mut Collector<'_>,
) -> Option<T> {
    match parse(s.get_ref()) {
        Ok(value) => match refuse(&value) {
            None => Some(value),
            Some(why) => {
                c.error(s.span(), key, why);
                None
            }
        },
        Err(e) => {
            c.error(s.span(), key, e);
            None
        }
    }
}

/// Parses `"90s"`, `"15m"`, `"1h 30m"`, `"250ms"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); write it like \"90s\", \"15m\" or \"1h\""))
}

/// Parses `"1MiB"`, `"512KiB"`, `"64kB"`, `"1048576"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let err = || format!("invalid size {text:?}; write it like \"1MiB\", \"512KiB\" or \"65536\"");
    let n: u64 = digits.parse().map_err(|_| err())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("ten").unwrap_err().contains("\"ten\""));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64kB"), Ok(64_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
