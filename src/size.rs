//! Byte sizes as people write them: `1500`, `64K`, `2.5G`, `3T`, `500GB`, `3TB`, `2TiB`.
//!
//! The rule, the same for every flag and config key that takes a size: a unit with a `B` and
//! no `i` (`KB`, `MB`, `GB`, `TB`, `PB`) is a power of 10, as disk vendors print them;
//! `KiB` … `PiB` and the bare letters `K`, `M`, `G`, `T`, `P` are powers of 2 (as `truncate`
//! and `dd` read them). Case does not matter; a space before the unit is allowed. Pure; the
//! arithmetic is checked, so a size that does not fit in 64 bits is refused, never wrapped.

/// Parse a size in bytes.
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "p" | "pib" => 1 << 50,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (K, M, G, T, P or KiB … PiB: powers of 2; KB, MB, GB, TB, PB: powers of 10)"
            ))
        }
    };
    let bad = || format!("{s:?} is not a size (like 500G, 500GB or 2TiB)");
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(bad());
    }
    let whole: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let too_big = || format!("{s:?} is too large");
    let mut bytes = whole.checked_mul(mult).ok_or_else(too_big)?;
    // The fraction, exactly: digits / 10^len of `mult`, rounded down.
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        let digits: u128 = frac.parse().map_err(|_| bad())?;
        let scale = 10u128.pow(frac.len() as u32);
        let part = u64::try_from(digits * mult as u128 / scale).map_err(|_| too_big())?;
        bytes = bytes.checked_add(part).ok_or_else(too_big)?;
    }
    Ok(bytes)
}

/// The parser for clap's `value_parser`.
pub fn parse_arg(s: &str) -> Result<u64, String> {
    parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        #[rustfmt::skip]
        let cases: [(&str, Result<u64, ()>); 18] = [
            ("1500", Ok(1500)), ("64K", Ok(64 << 10)), ("2.5G", Ok(5 << 29)), ("3T", Ok(3 << 40)),
            ("500GB", Ok(500_000_000_000)), ("3TB", Ok(3_000_000_000_000)), ("2TiB", Ok(2 << 40)),
            ("1.5 tb", Ok(1_500_000_000_000)), ("10M", Ok(10 << 20)), ("7b", Ok(7)), (".5K", Ok(512)),
            ("", Err(())), ("G", Err(())), ("-1G", Err(())), ("1.2.3G", Err(())), ("5X", Err(())),
            ("20000PB", Err(())), ("18446744073709551616", Err(())),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s).map_err(|_| ()), want, "{s:?}");
        }
    }
}
