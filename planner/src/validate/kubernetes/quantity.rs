//! Kubernetes resource quantities (`100m`, `1.5`, `2Gi`, `1e3`): a signed decimal number
//! and one suffix, binary (`Ki` … `Ei`), decimal (`n`, `u`, `m`, `k`, `M` … `E`) or an
//! exponent (`e3`, `E-2`). Parsed to compare requests with limits.

/// Billionths per unit: the finest a quantity keeps (finer values round up, as the API
/// server rounds them).
const NANOS_PER_UNIT: i32 = 9;

/// The value of quantity `text` in billionths, or why it is not a quantity.
pub(crate) fn parse(text: &str) -> Result<i128, String> {
    if text.is_empty() {
        return Err("empty; expected a number such as `1`, `500m` or `2Gi`".to_string());
    }
    let (negative, unsigned) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err("no number; a quantity starts with digits, such as `2Gi`".to_string());
    }
    if fraction.contains('.') {
        return Err("more than one `.`".to_string());
    }
    let (exponent10, exponent2) = suffix_scale(suffix)?;
    // The digits as one integer, scaled back by the digits after the point.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let exponent = i64::from(exponent10) + i64::from(NANOS_PER_UNIT)
        - i64::try_from(fraction.len()).map_err(|_| too_large())?;
    let magnitude = if digits.is_empty() {
        0
    } else {
        scaled(digits, exponent, exponent2)?
    };
    Ok(if negative { -magnitude } else { magnitude })
}

/// `digits` × 10^`exponent` × 2^`exponent2`, rounded up to a whole number.
fn scaled(digits: &str, exponent: i64, exponent2: u32) -> Result<i128, String> {
    // i128 holds 38 digits; anything that would need more is beyond any resource.
    if digits.len() > 38 || exponent > 38 {
        return Err(too_large());
    }
    let mut value: i128 = digits.parse().map_err(|_| too_large())?;
    if exponent >= 0 {
        let exponent = u32::try_from(exponent).map_err(|_| too_large())?;
        value = 10i128
            .checked_pow(exponent)
            .and_then(|p| value.checked_mul(p))
            .ok_or_else(too_large)?;
    } else {
        // Finer than a billionth: round up (a value above zero stays above zero).
        for _ in 0..exponent.unsigned_abs().min(39) {
            value = value / 10 + i128::from(value % 10 != 0);
        }
    }
    2i128
        .checked_pow(exponent2)
        .and_then(|p| value.checked_mul(p))
        .ok_or_else(too_large)
}

/// The powers of 10 and of 2 a suffix multiplies by.
fn suffix_scale(suffix: &str) -> Result<(i32, u32), String> {
    let scale = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .filter(|e| {
                    let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                })
                .ok_or_else(|| unknown_suffix(suffix))?;
            (exponent.parse::<i32>().map_err(|_| too_large())?, 0)
        }
    };
    Ok(scale)
}

fn unknown_suffix(suffix: &str) -> String {
    format!(
        "unknown suffix `{suffix}`; the suffixes are `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`, \
         `n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E` and an exponent such as `e3`"
    )
}

fn too_large() -> String {
    "too large a quantity".to_string()
}

#[cfg(test)]
mod tests {
    use super::parse;

    const UNIT: i128 = 1_000_000_000;

    #[test]
    fn quantities_kubernetes_accepts() {
        assert_eq!(parse("100m"), Ok(UNIT / 10));
        assert_eq!(parse("1.5"), Ok(3 * UNIT / 2));
        assert_eq!(parse("2Gi"), Ok(2 * (1 << 30) * UNIT));
        assert_eq!(parse("1e3"), Ok(1000 * UNIT));
        assert_eq!(parse("1E3"), Ok(1000 * UNIT));
        assert_eq!(parse("1E"), Ok(1_000_000_000_000_000_000 * UNIT));
        assert_eq!(parse("5e-3"), Ok(5 * UNIT / 1000));
        assert_eq!(parse("+2"), Ok(2 * UNIT));
        assert_eq!(parse("-1"), Ok(-UNIT));
        assert_eq!(parse(".5"), Ok(UNIT / 2));
        assert_eq!(parse("5."), Ok(5 * UNIT));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("0.000Gi"), Ok(0));
        assert_eq!(parse("128974848"), Ok(128_974_848 * UNIT));
        assert_eq!(parse("129e6"), Ok(129_000_000 * UNIT));
        assert_eq!(parse("123Mi"), Ok(123 * (1 << 20) * UNIT));
        assert_eq!(parse("8Ei"), Ok(8 * (1 << 60) * UNIT));
        assert_eq!(parse("1k"), parse("1000"));
        assert_eq!(parse("1Ki"), parse("1024"));
        assert_eq!(parse("250u"), Ok(250_000));
        assert_eq!(parse("7n"), Ok(7));
    }

    #[test]
    fn finer_than_a_billionth_rounds_up() {
        assert_eq!(parse("0.1n"), Ok(1));
        assert_eq!(parse("1.0000000001"), Ok(UNIT + 1));
    }

    #[test]
    fn mistakes_are_refused() {
        for text in [
            "", "Gi", ".", "+", "1.2.3", "2GB", "1ki", "1 Gi", "1e", "1e1.5", "1Kib", "abc",
            "1e99", "1e-", "--1", "inf", "NaN", "0x10",
        ] {
            assert!(parse(text).is_err(), "`{text}` was accepted");
        }
    }
}
