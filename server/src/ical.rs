//! iCalendar (RFC 5545) exports: a site's planned stops and a technician's schedule, so
//! they land in the calendars people already use.

use icalendar::{Calendar, Component, Event, EventLike};
use wearcast_protocol::UnixMs;

/// One event of an export.
#[derive(Clone, Debug)]
pub struct IcsEvent {
    /// Stable across exports, so calendar clients update instead of duplicating.
    pub uid: String,
    pub summary: String,
    pub description: String,
    pub location: String,
    pub start: UnixMs,
    pub end: UnixMs,
}

/// A calendar named `name` holding `events`, stamped at `now`.
pub fn calendar(name: &str, events: &[IcsEvent], now: UnixMs) -> String {
    let mut cal = Calendar::new();
    cal.name(name);
    for e in events {
        cal.push(
            Event::new()
                .uid(&e.uid)
                .timestamp(now.to_datetime())
                .summary(&e.summary)
                .description(&e.description)
                .location(&e.location)
                .starts(e.start.to_datetime())
                .ends(e.end.to_datetime())
                .done(),
        );
    }
    cal.done().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_is_a_valid_calendar_with_utc_times_and_escaped_text() {
        let ics = calendar(
            "Plant 1, planned stops",
            &[IcsEvent {
                uid: "stop-1@wearcast".into(),
                summary: "Planned stop; line 2".into(),
                description: "Replace bearing, belt".into(),
                location: "Plant 1".into(),
                start: UnixMs::parse_rfc3339("2026-11-29T05:00:00Z").unwrap(),
                end: UnixMs::parse_rfc3339("2026-11-29T13:00:00Z").unwrap(),
            }],
            UnixMs(0),
        );
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\n"), "{ics}");
        assert!(ics.contains("DTSTART:20261129T050000Z\r\n"), "{ics}");
        assert!(ics.contains("DTEND:20261129T130000Z\r\n"), "{ics}");
        assert!(ics.contains("UID:stop-1@wearcast\r\n"), "{ics}");
        // RFC 5545 escapes `;` and `,` in text values.
        assert!(ics.contains("SUMMARY:Planned stop\\; line 2"), "{ics}");
        assert!(ics.contains("DESCRIPTION:Replace bearing\\, belt"), "{ics}");
        assert!(ics.trim_end().ends_with("END:VCALENDAR"), "{ics}");
    }
}
