//! InfluxDB line protocol, written by hand so every character is ours to test
//! (VictoriaMetrics accepts even malformed lines, so its answers prove nothing).
//!
//! `park_light,node=pole-017,site=remiseparken,zone=skatepark lux_avg=6.4,...,clock_ok=true 1764093600000`
//! with millisecond timestamps. A tag without a value is left out, never sent empty.

use std::fmt::Write;

use parklight_protocol::alert::Alert;

use crate::detect::ZoneWindow;
use crate::store::{ForwardRow, StatusRow};

/// The measurement reports go to.
pub const MEASUREMENT: &str = "park_light";
/// The measurement node status changes go to.
pub const STATUS_MEASUREMENT: &str = "park_light_status";

/// The measurement alert changes go to.
pub const ALERT_MEASUREMENT: &str = "park_alert";
/// The measurement zone windows go to.
pub const ZONE_MEASUREMENT: &str = "park_zone";

/// Escapes a tag key, tag value or field key: commas, equals signs and spaces. (Ids are
/// identifiers, so there are no newlines, which line protocol cannot carry in tags.)
pub fn escape_key(text: &str, out: &mut String) {
    for c in text.chars() {
        if matches!(c, ',' | '=' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// One line for one report, appended to `out` with its newline.
pub fn write_report(row: &ForwardRow, out: &mut String) {
    let r = &row.report;
    let mut fields: Vec<(&str, String)> = Vec::with_capacity(8);
    if let Some(lux) = r.lux {
        fields.push(("lux_avg", float(lux.avg)));
        fields.push(("lux_min", float(lux.min)));
        fields.push(("lux_max", float(lux.max)));
    }
    fields.push(("motion", format!("{}i", r.motion)));
    fields.push(("lamp_level", format!("{}i", r.lamp_level)));
    fields.push(("lamp_on", r.lamp_on.to_string()));
    if let Some(watts) = r.power_w {
        fields.push(("power_w", float(watts)));
    }
    fields.push(("clock_ok", r.clock_ok.to_string()));
    let tags = [
        ("node", Some(row.node.as_str())),
        ("site", row.site.as_deref()),
        ("zone", r.zone.as_deref()),
    ];
    write_line(MEASUREMENT, &tags, &fields, r.ts, out);
}

/// One line for one node status change (stamped with its arrival), appended to `out`.
pub fn write_status(row: &StatusRow, out: &mut String) {
    let mut fields = vec![
        ("online", row.online.to_string()),
        ("boot", format!("{}i", row.boot)),
        ("conn", format!("{}i", row.conn)),
    ];
    if let Some(reason) = &row.reason {
        fields.push(("reason", string(reason)));
    }
    let tags = [
        ("node", Some(row.node.as_str())),
        ("site", row.site.as_deref()),
    ];
    write_line(STATUS_MEASUREMENT, &tags, &fields, row.received, out);
}

/// One line for one alert change (stamped with its time), appended to `out`: numeric
/// codes, because Prometheus-style queries read string fields as 0.
pub fn write_alert(alert: &Alert, out: &mut String) {
    let fields = [
        ("state_code", format!("{}i", alert.state as u8)),
        ("severity_code", format!("{}i", alert.severity as u8)),
        ("rev", format!("{}i", alert.rev)),
        ("id", string(&alert.id)),
    ];
    let tags = [
        ("kind", Some(alert.kind.as_str())),
        ("node", alert.node.as_deref()),
        ("site", Some(alert.site.as_str())),
        ("zone", alert.zone.as_deref()),
    ];
    write_line(ALERT_MEASUREMENT, &tags, &fields, alert.ts as i64, out);
}

/// One line for one zone window (stamped with its start), appended to `out`; figures
/// the window has none of (lux while unobserved) are left out.
pub fn write_window(w: &ZoneWindow, out: &mut String) {
    let mut fields = vec![("status_code", format!("{}i", w.status as u8))];
    fields.extend(w.lux_avg.map(|v| ("lux_avg", float(v))));
    fields.extend(w.lux_min.map(|v| ("lux_min", float(v))));
    fields.extend([
        ("required_avg", float(w.required_avg)),
        ("required_min", float(w.required_min)),
        ("detections", format!("{}i", w.detections)),
        (
            "occupied_dark_minutes",
            format!("{}i", w.occupied_dark_minutes),
        ),
        ("detections_dark", format!("{}i", w.detections_dark)),
    ]);
    let tags = [
        ("site", Some(w.site.as_str())),
        ("zone", Some(w.zone.as_str())),
    ];
    write_line(ZONE_MEASUREMENT, &tags, &fields, w.start, out);
}

/// `measurement,tag=value,... field=value,... ts\n`, leaving out tags without a value.
fn write_line(
    measurement: &str,
    tags: &[(&str, Option<&str>)],
    fields: &[(&str, String)],
    ts_ms: i64,
    out: &mut String,
) {
    out.push_str(measurement);
    for (key, value) in tags {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.push(',');
            out.push_str(key);
            out.push('=');
            escape_key(value, out);
        }
    }
    for (i, (key, value)) in fields.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    let _ = writeln!(out, " {ts_ms}");
}

/// A string field: quoted, with double quotes and backslashes escaped.
fn string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// A float field: Rust's shortest round-trip form, which line protocol reads as a float
/// even without a decimal point. Non-finite values cannot occur (the decoder refuses them).
fn float(value: f64) -> String {
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(zone: Option<&str>, site: Option<&str>) -> ForwardRow {
        let mut report = crate::store::tests::report(7, 0);
        report.zone = zone.map(str::to_owned);
        (report.motion, report.lamp_level, report.lamp_on) = (3, 80, true);
        ForwardRow {
            id: 1,
            node: "pole-017".into(),
            site: site.map(str::to_owned),
            report,
            held: false,
        }
    }

    #[test]
    fn a_report_is_one_line() {
        let mut out = String::new();
        write_report(&row(Some("skatepark"), Some("remiseparken")), &mut out);
        assert_eq!(
            out,
            "park_light,node=pole-017,site=remiseparken,zone=skatepark \
             lux_avg=6.4,lux_min=5.9,lux_max=7.1,motion=3i,lamp_level=80i,lamp_on=true,power_w=31.5,clock_ok=true \
             1764093600000\n"
        );
    }

    #[test]
    fn missing_tags_and_fields_are_left_out() {
        let mut unknown = row(None, None);
        unknown.report.lux = None;
        unknown.report.power_w = None;
        unknown.report.clock_ok = false;
        let mut out = String::new();
        write_report(&unknown, &mut out);
        assert_eq!(
            out,
            "park_light,node=pole-017 motion=3i,lamp_level=80i,lamp_on=true,clock_ok=false 1764093600000\n"
        );
        let mut empty = row(Some(""), Some("remiseparken"));
        empty.report.lux = None;
        let mut out = String::new();
        write_report(&empty, &mut out);
        assert!(
            out.starts_with("park_light,node=pole-017,site=remiseparken motion="),
            "{out}"
        );
    }

    #[test]
    fn a_status_change_is_one_line() {
        let row = StatusRow {
            id: 1,
            node: "pole-017".into(),
            site: Some("remiseparken".into()),
            received: 1_764_093_600_000,
            online: false,
            reason: Some("lost".into()),
            boot: 7,
            conn: 3,
        };
        let mut out = String::new();
        write_status(&row, &mut out);
        assert_eq!(
            out,
            "park_light_status,node=pole-017,site=remiseparken online=false,boot=7i,conn=3i,reason=\"lost\" 1764093600000\n"
        );
    }

    #[test]
    fn escaping_follows_the_line_protocol_rules() {
        let mut out = String::new();
        escape_key("a b,c=d\\e", &mut out);
        assert_eq!(out, "a\\ b\\,c\\=d\\e");
        assert_eq!(string(r#"say "hi" \ bye"#), r#""say \"hi\" \\ bye""#);
        // Line protocol reads a number without a decimal point as a float; `i` marks ints.
        assert_eq!(float(7.0), "7");
    }

    #[test]
    fn an_alert_change_and_a_zone_window_carry_numeric_codes() {
        let text = br#"{"v":1,"id":"a-7","rev":3,"kind":"dark_zone","site":"remiseparken","zone":"skatepark","node":null,"state":"acknowledged","severity":"critical","since":1,"ts":1764093660000,"detail":"","flapping":false,"children":[],"children_count":0}"#;
        let alert = Alert::from_json(text).unwrap();
        let mut out = String::new();
        write_alert(&alert, &mut out);
        assert_eq!(
            out,
            "park_alert,kind=dark_zone,site=remiseparken,zone=skatepark \
             state_code=1i,severity_code=3i,rev=3i,id=\"a-7\" 1764093660000\n"
        );
        let window = ZoneWindow {
            site: "remiseparken".into(),
            zone: "skate park".into(),
            start: 1_764_093_300_000,
            end: 1_764_093_600_000,
            status: crate::detect::Status::Unobserved,
            lux_avg: None,
            lux_min: None,
            required_avg: 5.0,
            required_min: 1.0,
            detections: 4,
            occupied_dark_minutes: 0,
            detections_dark: 0,
            valid_nodes: 0,
            nodes: 3,
            cause: Some("power loss: pole-001".into()),
            revised: false,
        };
        let mut out = String::new();
        write_window(&window, &mut out);
        assert_eq!(
            out,
            "park_zone,site=remiseparken,zone=skate\\ park status_code=2i,required_avg=5,required_min=1,\
             detections=4i,occupied_dark_minutes=0i,detections_dark=0i 1764093300000\n"
        );
    }
}
