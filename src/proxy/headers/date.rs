//! The `Date` a response gets when it has none (RFC 9110 §6.6.1), formatted once a second per
//! thread, for both codecs (`headers`).

use http::header::{self, HeaderMap, HeaderValue};

/// Hyper codec: `Date` on a response that has none (a proxy forwarding a response without one
/// adds it, RFC 9110 §6.6.1; the proxy's own answers get one as an origin's do). An existing
/// `Date` is left as it is.
pub fn add_date(headers: &mut HeaderMap) {
    if !headers.contains_key(header::DATE) {
        headers.insert(header::DATE, date().1);
    }
}

/// The length of the line [`write_date`] writes.
pub const DATE_LINE_LEN: usize = b"date: \r\n".len() + IMF_FIXDATE_LEN;

/// Bytes codec: the `Date` line a response gets when it has none (see [`add_date`]).
pub fn write_date(out: &mut Vec<u8>) {
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(&date().0);
    out.extend_from_slice(b"\r\n");
}

/// The current second's IMF-fixdate, as bytes and as a field value, formatted once per
/// second per thread: a request reads a clock (the coarse one, where there is one) and
/// copies 29 bytes or clones a shared value.
fn date() -> ([u8; IMF_FIXDATE_LEN], HeaderValue) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, [u8; IMF_FIXDATE_LEN], HeaderValue)> = const {
            std::cell::RefCell::new((u64::MAX, [0; IMF_FIXDATE_LEN], HeaderValue::from_static("")))
        };
    }
    let now = unix_seconds();
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != now {
            let text = imf_fixdate(now);
            let value = HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&text))
                .expect("an IMF-fixdate is a valid field value");
            *cached = (now, text, value);
        }
        (cached.1, cached.2.clone())
    })
}

#[cfg(target_os = "linux")]
fn unix_seconds() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to write.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } == 0;
    if ok {
        u64::try_from(now.tv_sec).unwrap_or(0)
    } else {
        system_seconds()
    }
}

#[cfg(not(target_os = "linux"))]
fn unix_seconds() -> u64 {
    system_seconds()
}

fn system_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) const IMF_FIXDATE_LEN: usize = 29;

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7) for seconds since the Unix epoch.
pub(super) fn imf_fixdate(secs: u64) -> [u8; IMF_FIXDATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let time = secs % 86_400;
    // The civil date of a day count (H. Hinnant's algorithm), in eras of 400 years.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 2
    } else {
        month_from_march - 10
    };
    let year = (year_of_era + era * 400 + u64::from(month < 2)).min(9999);
    let two = |n: u64| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
    let mut out = [0u8; IMF_FIXDATE_LEN];
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    out[5..7].copy_from_slice(&two(day));
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[month as usize]);
    out[11] = b' ';
    out[12..14].copy_from_slice(&two(year / 100));
    out[14..16].copy_from_slice(&two(year));
    out[16] = b' ';
    out[17..19].copy_from_slice(&two(time / 3600));
    out[19] = b':';
    out[20..22].copy_from_slice(&two(time / 60 % 60));
    out[22] = b':';
    out[23..25].copy_from_slice(&two(time % 60));
    out[25..].copy_from_slice(b" GMT");
    out
}
