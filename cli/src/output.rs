//! Formatting shared by the commands.

use chrono::{Local, TimeZone};

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn time(ns: i64) -> String {
    match Local.timestamp_opt(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    ) {
        chrono::LocalResult::Single(t) => t.format("%Y-%m-%d %H:%M:%S %z").to_string(),
        _ => format!("@{}", ns / 1_000_000_000),
    }
}

pub fn time_short(ns: i64) -> String {
    match Local.timestamp_opt(ns.div_euclid(1_000_000_000), 0) {
        chrono::LocalResult::Single(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        _ => format!("@{}", ns / 1_000_000_000),
    }
}

pub fn is_tty_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// A size as people write it: `500M`, `1.5G`, `1.5GiB`, `2T`, `4096` (bytes). K, M, G, T
/// (with or without `B`/`iB`, any case) are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let mult: u128 = match unit
        .to_ascii_uppercase()
        .trim_end_matches('B')
        .trim_end_matches('I')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "P" => 1 << 50,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use K, M, G or T, e.g. 500M or 1.5G)"
            ))
        }
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !(digits(int) || (int.is_empty() && digits(frac))) || !(frac.is_empty() || digits(frac)) {
        return Err(format!("{s:?} is not a size (e.g. 500M, 1.5G, 2T)"));
    }
    let too_large = || format!("{s:?} is too large");
    let int_v: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_large())?
    };
    let frac = &frac[..frac.len().min(18)];
    let frac_v: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| too_large())?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let v = int_v
        .checked_mul(mult)
        .and_then(|i| i.checked_add(frac_v * mult / scale))
        .ok_or_else(too_large)?;
    u64::try_from(v).map_err(|_| too_large())
}

/// Standard output is a pipe whose reader has gone (`pluto log | head`): end the way
/// `git log | head` does, killed by SIGPIPE without a word, so a shell with `pipefail`
/// still sees that the output was cut short. SIGPIPE stays ignored everywhere else (Rust's
/// default), so a peer closing a socket is an error to handle, never a silent death.
pub fn stdout_closed() -> ! {
    // SAFETY: restoring the default action and raising a signal in our own process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

/// Write to standard output, as `print!` does, but without its panic when that fails:
/// a closed pipe ends the process quietly, any other failure (a full disk behind `>`)
/// with a message and exit code 1.
pub fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            stdout_closed();
        }
        eprintln!("pluto: error: cannot write to standard output: {e}");
        std::process::exit(crate::exit::ERROR as i32);
    }
}

/// `println!` for the commands: see [`write_stdout`].
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the commands: see [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_as_people_write_them() {
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1.5 gb"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10K"), Ok(10240));
        assert!(parse_size("1.5X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("G").is_err());
        assert!(parse_size("1..5G").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }
}
