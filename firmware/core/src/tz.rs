//! Civil dates and POSIX TZ strings (`CET-1CEST,M3.5.0,M10.5.0/3`), without a time zone database.

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Why a TZ string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TzError {
    /// The zone name is not 3 or more letters (or `<...>`).
    Name,
    /// An offset or time is malformed or out of range.
    Offset,
    /// A transition rule is malformed.
    Rule,
    /// A daylight zone without transition rules (no database to look them up in).
    MissingRule,
    /// Text after the end of the string.
    Trailing,
}

impl core::fmt::Display for TzError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TzError::Name => "tz: bad zone name",
            TzError::Offset => "tz: bad offset or time",
            TzError::Rule => "tz: bad transition rule",
            TzError::MissingRule => "tz: daylight time without rules",
            TzError::Trailing => "tz: unexpected text at the end",
        })
    }
}

/// The day a daylight-time transition falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleDay {
    /// `Jn`: day 1 to 365, February 29 never counted.
    JulianNoLeap(u16),
    /// `n`: day 0 to 365, February 29 counted.
    Julian(u16),
    /// `Mm.w.d`: weekday `d` (0 = Sunday) of week `w` (5 = last) of month `m`.
    MonthWeekDay { month: u8, week: u8, weekday: u8 },
}

impl RuleDay {
    /// Days since 1970-01-01 of this rule's day in `year`.
    fn day_in(self, year: i32) -> i64 {
        let jan1 = days_from_civil(year, 1, 1);
        match self {
            RuleDay::JulianNoLeap(n) => {
                let n = i64::from(n);
                jan1 + n - 1 + i64::from(is_leap(year) && n >= 60)
            }
            RuleDay::Julian(n) => jan1 + i64::from(n),
            RuleDay::MonthWeekDay {
                month,
                week,
                weekday,
            } => {
                let month = u32::from(month);
                let first = days_from_civil(year, month, 1);
                let first_weekday = (first + 4).rem_euclid(7); // 1970-01-01 was a Thursday
                let mut day = 1
                    + (i64::from(weekday) - first_weekday).rem_euclid(7)
                    + 7 * (i64::from(week) - 1);
                while day > i64::from(days_in_month(year, month)) {
                    day -= 7;
                }
                first + day - 1
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transition {
    day: RuleDay,
    /// Seconds after local midnight (in the time in force before the transition).
    time_s: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Daylight {
    /// Seconds east of UTC while daylight time is in force.
    offset_s: i32,
    start: Transition,
    end: Transition,
}

/// A time zone described by a POSIX TZ string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone {
    /// Seconds east of UTC of standard time (note: POSIX writes it west-positive).
    std_offset_s: i32,
    daylight: Option<Daylight>,
}

impl TimeZone {
    /// UTC, offset zero, no daylight time.
    pub const UTC: TimeZone = TimeZone {
        std_offset_s: 0,
        daylight: None,
    };

    /// Parses a POSIX TZ string: `std offset [dst [offset] ,start[/time],end[/time]]`.
    pub fn parse(text: &str) -> Result<TimeZone, TzError> {
        let mut p = TzParser {
            rest: text.as_bytes(),
        };
        p.name()?;
        let std_offset_s = -p.offset(24)?;
        if p.rest.is_empty() {
            return Ok(TimeZone {
                std_offset_s,
                daylight: None,
            });
        }
        p.name()?;
        let offset_s = if matches!(p.rest.first(), Some(b',') | None) {
            std_offset_s + 3600
        } else {
            -p.offset(24)?
        };
        if !p.eat(b',') {
            return Err(TzError::MissingRule);
        }
        let start = p.transition()?;
        if !p.eat(b',') {
            return Err(TzError::Rule);
        }
        let end = p.transition()?;
        if !p.rest.is_empty() {
            return Err(TzError::Trailing);
        }
        Ok(TimeZone {
            std_offset_s,
            daylight: Some(Daylight {
                offset_s,
                start,
                end,
            }),
        })
    }

    /// Seconds east of UTC in force at `utc_ms`.
    pub fn offset_at(&self, utc_ms: i64) -> i32 {
        let Some(dst) = self.daylight else {
            return self.std_offset_s;
        };
        let local_days = (utc_ms + i64::from(self.std_offset_s) * 1000).div_euclid(DAY_MS);
        let (year, _, _) = civil_from_days(local_days);
        // A transition's time is local time as it was before the transition.
        let instant = |t: Transition, offset_before: i32| {
            (t.day.day_in(year) * 86_400 + i64::from(t.time_s) - i64::from(offset_before)) * 1000
        };
        let start = instant(dst.start, self.std_offset_s);
        let end = instant(dst.end, dst.offset_s);
        let in_dst = if start < end {
            start <= utc_ms && utc_ms < end
        } else {
            utc_ms < end || utc_ms >= start
        };
        if in_dst {
            dst.offset_s
        } else {
            self.std_offset_s
        }
    }

    /// Local wall-clock milliseconds (since 1970-01-01 local) of a UTC instant.
    pub fn to_local(&self, utc_ms: i64) -> i64 {
        utc_ms + i64::from(self.offset_at(utc_ms)) * 1000
    }

    /// The UTC instant of a local wall-clock time. In the hour that repeats when clocks go
    /// back, the earlier instant; in the hour skipped when they go forward, the instant
    /// standard time would give (so the step still happens, an hour late on the clock).
    pub fn from_local(&self, local_ms: i64) -> i64 {
        let offsets = [
            self.daylight.map_or(self.std_offset_s, |d| d.offset_s),
            self.std_offset_s,
        ];
        let mut candidates = offsets
            .into_iter()
            .map(|off| local_ms - i64::from(off) * 1000)
            .filter(|&utc| self.to_local(utc) == local_ms);
        let first = candidates.next();
        match (first, candidates.next()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            _ => local_ms - i64::from(self.std_offset_s) * 1000,
        }
    }
}

struct TzParser<'a> {
    rest: &'a [u8],
}

impl TzParser<'_> {
    fn eat(&mut self, b: u8) -> bool {
        if self.rest.first() == Some(&b) {
            self.rest = &self.rest[1..];
            true
        } else {
            false
        }
    }

    /// A zone name: 3 or more letters, or `<...>` with letters, digits and signs.
    fn name(&mut self) -> Result<(), TzError> {
        if self.eat(b'<') {
            let end = self
                .rest
                .iter()
                .position(|&b| b == b'>')
                .ok_or(TzError::Name)?;
            let valid = end >= 3
                && self.rest[..end]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'-');
            if !valid {
                return Err(TzError::Name);
            }
            self.rest = &self.rest[end + 1..];
            return Ok(());
        }
        let len = self
            .rest
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        if len < 3 {
            return Err(TzError::Name);
        }
        self.rest = &self.rest[len..];
        Ok(())
    }

    fn number(&mut self, max: u32) -> Result<u32, TzError> {
        let digits = self.rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 3 {
            return Err(TzError::Offset);
        }
        let value = self.rest[..digits]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
        self.rest = &self.rest[digits..];
        if value > max {
            return Err(TzError::Offset);
        }
        Ok(value)
    }

    /// `[+-]hh[:mm[:ss]]` in seconds, hours up to `max_hours`.
    fn offset(&mut self, max_hours: u32) -> Result<i32, TzError> {
        let negative = self.eat(b'-');
        if !negative {
            self.eat(b'+');
        }
        let mut seconds = self.number(max_hours)? * 3600;
        if self.eat(b':') {
            seconds += self.number(59)? * 60;
            if self.eat(b':') {
                seconds += self.number(59)?;
            }
        }
        let seconds = seconds as i32;
        Ok(if negative { -seconds } else { seconds })
    }

    fn transition(&mut self) -> Result<Transition, TzError> {
        let day = if self.eat(b'J') {
            let n = self.number(365).map_err(|_| TzError::Rule)?;
            if n == 0 {
                return Err(TzError::Rule);
            }
            RuleDay::JulianNoLeap(n as u16)
        } else if self.eat(b'M') {
            let month = self.number(12).map_err(|_| TzError::Rule)?;
            if month == 0 || !self.eat(b'.') {
                return Err(TzError::Rule);
            }
            let week = self.number(5).map_err(|_| TzError::Rule)?;
            if week == 0 || !self.eat(b'.') {
                return Err(TzError::Rule);
            }
            let weekday = self.number(6).map_err(|_| TzError::Rule)?;
            RuleDay::MonthWeekDay {
                month: month as u8,
                week: week as u8,
                weekday: weekday as u8,
            }
        } else {
            RuleDay::Julian(self.number(365).map_err(|_| TzError::Rule)? as u16)
        };
        let time_s = if self.eat(b'/') {
            self.offset(167)?
        } else {
            7200
        };
        Ok(Transition { day, time_s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPH: &str = "CET-1CEST,M3.5.0,M10.5.0/3";

    fn utc(y: i32, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60) * 1000
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-1_000_000, -1, 0, 59, 10_956, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn copenhagen_switches_on_the_last_sundays() {
        let tz = TimeZone::parse(CPH).unwrap();
        // 2026: summer time from 29 March 01:00 UTC to 25 October 01:00 UTC.
        assert_eq!(tz.offset_at(utc(2026, 3, 29, 0, 59)), 3600);
        assert_eq!(tz.offset_at(utc(2026, 3, 29, 1, 0)), 7200);
        assert_eq!(tz.offset_at(utc(2026, 10, 25, 0, 59)), 7200);
        assert_eq!(tz.offset_at(utc(2026, 10, 25, 1, 0)), 3600);
        assert_eq!(tz.offset_at(utc(2026, 11, 25, 12, 0)), 3600);
    }

    #[test]
    fn local_times_across_the_changes() {
        let tz = TimeZone::parse(CPH).unwrap();
        // 23:00 local on the evening before clocks go back is 21:00 UTC (summer time) ...
        assert_eq!(
            tz.from_local(utc(2026, 10, 24, 23, 0)),
            utc(2026, 10, 24, 21, 0)
        );
        // ... and 05:00 the next morning is 04:00 UTC (winter time).
        assert_eq!(
            tz.from_local(utc(2026, 10, 25, 5, 0)),
            utc(2026, 10, 25, 4, 0)
        );
        // 02:30 happens twice on 25 October: the earlier one.
        assert_eq!(
            tz.from_local(utc(2026, 10, 25, 2, 30)),
            utc(2026, 10, 25, 0, 30)
        );
        // 02:30 never happens on 29 March: as standard time would have it.
        assert_eq!(
            tz.from_local(utc(2026, 3, 29, 2, 30)),
            utc(2026, 3, 29, 1, 30)
        );
    }

    #[test]
    fn southern_and_unusual_zones() {
        // Sydney: daylight time from October to April, across the new year.
        let syd = TimeZone::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(syd.offset_at(utc(2026, 1, 15, 0, 0)), 11 * 3600);
        assert_eq!(syd.offset_at(utc(2026, 7, 15, 0, 0)), 10 * 3600);
        let ny = TimeZone::parse("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(ny.offset_at(utc(2026, 7, 1, 12, 0)), -4 * 3600);
        assert_eq!(
            TimeZone::parse("<+0330>-3:30").unwrap().offset_at(0),
            12_600
        );
        assert_eq!(TimeZone::parse("UTC0").unwrap(), TimeZone::UTC);
        let julian = TimeZone::parse("XXX0YYY,J60/0,J300/0").unwrap();
        assert_eq!(julian.offset_at(utc(2024, 3, 1, 0, 30)), 3600); // J60 is 1 March, leap or not
    }

    #[test]
    fn refuses_bad_strings() {
        for (text, err) in [
            ("", TzError::Name),
            ("C1", TzError::Name),
            ("CET", TzError::Offset),
            ("CET-25", TzError::Offset),
            ("CET-1CEST", TzError::MissingRule),
            ("CET-1CEST,M13.5.0,M10.5.0", TzError::Rule),
            ("CET-1CEST,M3.6.0,M10.5.0", TzError::Rule),
            ("CET-1CEST,M3.5.0", TzError::Rule),
            ("CET-1CEST,M3.5.0,M10.5.0/3x", TzError::Trailing),
        ] {
            assert_eq!(TimeZone::parse(text), Err(err), "{text}");
        }
    }
}
