//! Maintenance-window occurrences: weekly planned stops in a site's local time turned
//! into UTC instants, correct across daylight-saving changes.

use chrono::{Datelike, Days, LocalResult, NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;
use serde::Serialize;
use wearcast_protocol::UnixMs;

/// A weekly window in local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeeklyWindow {
    /// 0 = Monday.
    pub weekday: u32,
    pub start_minute: u32,
    pub duration_minutes: u32,
}

/// One concrete planned stop, `[start, end)` in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Occurrence {
    pub start: UnixMs,
    pub end: UnixMs,
}

/// Every occurrence of `windows` in `tz` that starts in `[from, to)`, sorted by start.
pub fn occurrences(tz: Tz, windows: &[WeeklyWindow], from: UnixMs, to: UnixMs) -> Vec<Occurrence> {
    let mut out = Vec::new();
    if windows.is_empty() || to <= from {
        return out;
    }
    let first = from.to_datetime().with_timezone(&tz).date_naive();
    let last = to.to_datetime().with_timezone(&tz).date_naive();
    let mut day = first.pred_opt().unwrap_or(first);
    while day <= last {
        for w in windows {
            if day.weekday().num_days_from_monday() != w.weekday {
                continue;
            }
            let Some(start) = local_instant(tz, day, w.start_minute) else {
                continue;
            };
            if start >= from && start < to {
                out.push(Occurrence {
                    start,
                    end: start.plus_ms(i64::from(w.duration_minutes) * 60_000),
                });
            }
        }
        match day.checked_add_days(Days::new(1)) {
            Some(next) => day = next,
            None => break,
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The instant of `minute` after local midnight on `day`. A time skipped by a
/// daylight-saving jump moves forward by an hour; a repeated time takes the first.
fn local_instant(tz: Tz, day: NaiveDate, minute: u32) -> Option<UnixMs> {
    let time = NaiveTime::from_hms_opt(minute / 60, minute % 60, 0)?;
    let local = day.and_time(time);
    let resolved = match tz.from_local_datetime(&local) {
        LocalResult::Single(dt) => dt,
        LocalResult::Ambiguous(first, _) => first,
        LocalResult::None => tz
            .from_local_datetime(&(local + chrono::Duration::hours(1)))
            .earliest()?,
    };
    Some(UnixMs(resolved.timestamp_millis()))
}

/// `Sun 29 Nov 06:00–14:00 (Europe/Berlin)`.
pub fn describe(tz: Tz, occurrence: &Occurrence) -> String {
    let start = occurrence.start.to_datetime().with_timezone(&tz);
    let end = occurrence.end.to_datetime().with_timezone(&tz);
    let end_fmt = if end.date_naive() == start.date_naive() {
        end.format("%H:%M").to_string()
    } else {
        end.format("%a %d %b %H:%M").to_string()
    };
    format!(
        "{}–{} ({})",
        start.format("%a %d %b %H:%M"),
        end_fmt,
        tz.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> UnixMs {
        UnixMs::parse_rfc3339(s).unwrap()
    }

    const SUNDAY_6_TO_14: WeeklyWindow = WeeklyWindow {
        weekday: 6,
        start_minute: 360,
        duration_minutes: 480,
    };

    #[test]
    fn weekly_windows_land_on_the_local_weekday_and_hour() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // Sunday 2026-11-22 is a Sunday; Berlin is UTC+1 in November.
        let occ = occurrences(
            tz,
            &[SUNDAY_6_TO_14],
            ms("2026-11-20T00:00:00Z"),
            ms("2026-12-07T00:00:00Z"),
        );
        assert_eq!(
            occ.iter().map(|o| o.start).collect::<Vec<_>>(),
            vec![
                ms("2026-11-22T05:00:00Z"),
                ms("2026-11-29T05:00:00Z"),
                ms("2026-12-06T05:00:00Z")
            ]
        );
        assert_eq!(occ[0].end, ms("2026-11-22T13:00:00Z"));
        assert_eq!(
            describe(tz, &occ[0]),
            "Sun 22 Nov 06:00–14:00 (Europe/Berlin)"
        );
    }

    #[test]
    fn a_window_keeps_its_local_time_across_a_daylight_saving_change() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // Clocks go back on Sunday 2026-10-25.
        let occ = occurrences(
            tz,
            &[SUNDAY_6_TO_14],
            ms("2026-10-17T00:00:00Z"),
            ms("2026-10-26T00:00:00Z"),
        );
        assert_eq!(occ[0].start, ms("2026-10-18T04:00:00Z")); // UTC+2
        assert_eq!(occ[1].start, ms("2026-10-25T05:00:00Z")); // UTC+1
    }

    #[test]
    fn a_start_in_a_skipped_hour_moves_forward() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 02:30 does not exist in Berlin.
        let w = WeeklyWindow {
            weekday: 6,
            start_minute: 150,
            duration_minutes: 60,
        };
        let occ = occurrences(
            tz,
            &[w],
            ms("2026-03-28T00:00:00Z"),
            ms("2026-03-30T00:00:00Z"),
        );
        assert_eq!(occ[0].start, ms("2026-03-29T01:30:00Z")); // 03:30 CEST
    }

    #[test]
    fn only_windows_starting_inside_the_range_are_returned() {
        let tz: Tz = "UTC".parse().unwrap();
        let occ = occurrences(
            tz,
            &[SUNDAY_6_TO_14],
            ms("2026-11-22T07:00:00Z"),
            ms("2026-11-29T06:00:00Z"),
        );
        assert!(occ.is_empty(), "{occ:?}");
    }
}
