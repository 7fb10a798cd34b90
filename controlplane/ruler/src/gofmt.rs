//! Go's number formatting as Prometheus' templates and APIs print numbers:
//! `%v`/`%g` (shortest or with a precision), `%e`, `%f`, and the
//! `humanize*` template functions built on `%.4g`.

/// Decimal digits of `v.abs()` (no leading/trailing zeros) and the
/// position of the decimal point (`0.d1d2… × 10^dp`): shortest round-trip
/// digits with `prec == None`, else rounded to `prec` significant digits.
fn digits(v: f64, prec: Option<usize>) -> (String, i32) {
    let s = match prec {
        None => format!("{:e}", v.abs()),
        Some(p) => format!("{:.*e}", p.max(1) - 1, v.abs()),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut d: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    while d.len() > 1 && d.ends_with('0') {
        d.pop();
    }
    (d, exp + 1)
}

fn special(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("NaN".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 { "+Inf".into() } else { "-Inf".into() })
    } else {
        None
    }
}

fn fmt_e(neg: bool, d: &str, dp: i32, prec: usize) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let b = d.as_bytes();
    out.push(b.first().map(|c| *c as char).unwrap_or('0'));
    if prec > 0 {
        out.push('.');
        for i in 1..=prec {
            out.push(b.get(i).map(|c| *c as char).unwrap_or('0'));
        }
    }
    let exp = if d == "0" { 0 } else { dp - 1 };
    out.push('e');
    out.push(if exp < 0 { '-' } else { '+' });
    let e = exp.unsigned_abs();
    if e < 10 {
        out.push('0');
    }
    out.push_str(&e.to_string());
    out
}

fn fmt_f(neg: bool, d: &str, dp: i32, prec: usize) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let b = d.as_bytes();
    if dp > 0 {
        for i in 0..dp as usize {
            out.push(b.get(i).map(|c| *c as char).unwrap_or('0'));
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 0..prec as i32 {
            let j = dp + i;
            let c = if j < 0 { '0' } else { b.get(j as usize).map(|c| *c as char).unwrap_or('0') };
            out.push(c);
        }
    }
    out
}

/// Go's `strconv.FormatFloat(v, 'g', prec, 64)` (`prec` None: shortest),
/// which is also what `%v` and `%g` print.
pub fn format_g(v: f64, prec: Option<usize>) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let neg = v.is_sign_negative();
    if v == 0.0 {
        return if neg { "-0".into() } else { "0".into() };
    }
    let (d, dp) = digits(v, prec);
    let nd = d.len();
    let shortest = prec.is_none();
    let mut p = prec.unwrap_or(nd);
    let mut eprec = p as i32;
    if eprec > nd as i32 && nd as i32 >= dp {
        eprec = nd as i32;
    }
    if shortest {
        eprec = 6;
    }
    let exp = dp - 1;
    if exp < -4 || exp >= eprec {
        if p > nd {
            p = nd;
        }
        return fmt_e(neg, &d, dp, p.saturating_sub(1));
    }
    if p as i32 > dp {
        p = nd;
    }
    fmt_f(neg, &d, dp, (p as i32 - dp).max(0) as usize)
}

/// Go's `%.<prec>e` (`prec` None: shortest, as `strconv.FormatFloat(v, 'e', -1, 64)`).
pub fn format_e(v: f64, prec: Option<usize>) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let neg = v.is_sign_negative();
    let (d, dp) = if v == 0.0 { ("0".to_string(), 1) } else { digits(v, prec.map(|p| p + 1)) };
    let p = prec.unwrap_or(d.len() - 1);
    fmt_e(neg, &d, dp, p)
}

/// Go's `%.<prec>f`.
pub fn format_f(v: f64, prec: usize) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    format!("{v:.prec$}")
}

/// Prometheus' `humanize`: SI prefixes, `%.4g`.
pub fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return format_g(v, Some(4));
    }
    let mut v = v;
    if v.abs() >= 1.0 {
        let mut prefix = "";
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
        return format!("{}{prefix}", format_g(v, Some(4)));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

/// Prometheus' `humanize1024`: binary prefixes, `%.4g`.
pub fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return format_g(v, Some(4));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

/// Prometheus' `humanizeDuration` of seconds.
pub fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return format_g(v, Some(4));
    }
    if v == 0.0 {
        return "0s".into();
    }
    let (sign, v) = if v < 0.0 { ("-", -v) } else { ("", v) };
    if v >= 1.0 {
        let whole = v as i64;
        let (seconds, minutes, hours, days) = (whole % 60, (whole / 60) % 60, (whole / 3600) % 24, whole / 86_400);
        if days != 0 {
            return format!("{sign}{days}d {hours}h {minutes}m {seconds}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {minutes}m {seconds}s");
        }
        if minutes != 0 {
            return format!("{sign}{minutes}m {seconds}s");
        }
        return format!("{sign}{}s", format_g(v, Some(4)));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{sign}{}{prefix}s", format_g(v, Some(4)))
}

/// Prometheus' `humanizePercentage`.
pub fn humanize_percentage(v: f64) -> String {
    format!("{}%", format_g(v * 100.0, Some(4)))
}

/// Prometheus' `humanizeTimestamp`: Go's `time.Time.String()` in UTC.
pub fn humanize_timestamp(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return format_g(v, Some(4));
    }
    // As model.TimeFromUnixNano: millisecond precision, truncated.
    let ms = ((v * 1e9) as i64).div_euclid(1_000_000);
    let secs = ms.div_euclid(1000);
    let nanos = ms.rem_euclid(1000) * 1_000_000;
    let mut out = civil(secs);
    if nanos > 0 {
        let mut frac = format!("{nanos:09}");
        while frac.ends_with('0') {
            frac.pop();
        }
        out.push('.');
        out.push_str(&frac);
    }
    out.push_str(" +0000 UTC");
    out
}

/// `YYYY-MM-DD hh:mm:ss` of Unix seconds (UTC).
fn civil(secs: i64) -> String {
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = strata_promql::civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, (rem / 60) % 60, rem % 60)
}

/// RFC 3339 with nanoseconds as Go's `time.RFC3339Nano` prints UTC times
/// (trailing zeros of the fraction dropped).
pub fn rfc3339_nano(ms: i64) -> String {
    let mut s = civil(ms.div_euclid(1000)).replacen(' ', "T", 1);
    let frac = ms.rem_euclid(1000);
    if frac > 0 {
        let mut f = format!("{:03}", frac);
        while f.ends_with('0') {
            f.pop();
        }
        s.push('.');
        s.push_str(&f);
    }
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        // Expected strings from Go 1.22's fmt/strconv.
        let cases: &[(f64, Option<usize>, &str)] = &[
            (1.0, None, "1"),
            (0.5, None, "0.5"),
            (100000.0, None, "100000"),
            (1e6, None, "1e+06"),
            (1234567.0, None, "1.234567e+06"),
            (0.0001, None, "0.0001"),
            (0.00001, None, "1e-05"),
            (-2.5, None, "-2.5"),
            (1234.5678, Some(4), "1235"),
            (1.5, Some(4), "1.5"),
            (12345.0, Some(4), "1.234e+04"),
            (0.000123456, Some(4), "0.0001235"),
        ];
        for (v, p, want) in cases {
            assert_eq!(format_g(*v, *p), *want, "{v} {p:?}");
        }
        assert_eq!(format_e(1.0, None), "1e+00");
        assert_eq!(format_e(0.25, None), "2.5e-01");
        assert_eq!(format_e(1234.0, None), "1.234e+03");
        assert_eq!(format_e(0.0, None), "0e+00");
        assert_eq!(format_e(2.71, Some(1)), "2.7e+00");
        assert_eq!(format_f(2.0 / 3.0, 2), "0.67");
    }

    #[test]
    fn humanizes_like_prometheus() {
        assert_eq!(humanize(1234567.0), "1.235M");
        assert_eq!(humanize(0.001234), "1.234m");
        assert_eq!(humanize(0.0), "0");
        assert_eq!(humanize(999.0), "999");
        assert_eq!(humanize1024(1048576.0), "1Mi");
        assert_eq!(humanize1024(1.0), "1");
        assert_eq!(humanize_duration(90.0), "1m 30s");
        assert_eq!(humanize_duration(93784.0), "1d 2h 3m 4s");
        assert_eq!(humanize_duration(1.5), "1.5s");
        assert_eq!(humanize_duration(0.0012), "1.2ms");
        assert_eq!(humanize_percentage(0.1234), "12.34%");
        assert_eq!(humanize_timestamp(1435065584.128), "2015-06-23 13:19:44.128 +0000 UTC");
        assert_eq!(rfc3339_nano(1435065584128), "2015-06-23T13:19:44.128Z");
        assert_eq!(rfc3339_nano(1435065584000), "2015-06-23T13:19:44Z");
    }
}
