//! The HTTP API against the real binary: every route × every role, the bodies each role
//! gets, browser sessions, revocation, the limit on failed attempts, and the OpenAPI
//! document, validated and listing exactly the routes the router serves.

use std::collections::BTreeSet;
use std::time::Duration;

use parklight_sim::Scenario;
use parklight_site::Site;
use parklight_tests::api::{
    Answer, Credential, Listener, create_token, events, request, request_tls,
};
use parklight_tests::broker::Mosquitto;
use parklight_tests::gateway::{Gateway, remiseparken_file};
use parklight_tests::process::Parklight;
use parklight_tests::{one_at_a_time, wait_until};
use serde_json::{Value, json};

/// Who asks: no credential, then each role, least first.
const WHO: [&str; 5] = ["nobody", "viewer", "partnership", "maintenance", "operator"];

/// A route, and the status each of [`WHO`] gets.
struct Row {
    method: &'static str,
    /// As the OpenAPI document names it (`{id}` for a parameter); `None` when the
    /// document does not list it (`/metrics`, the document itself, an unknown route).
    documented: Option<&'static str>,
    expected: [u16; 5],
}

const OPEN: [u16; 5] = [200; 5];
const SIGNED_IN: [u16; 5] = [401, 200, 200, 200, 200];
const OPERATIONS: [u16; 5] = [401, 403, 403, 200, 200];
const USAGE: [u16; 5] = [401, 403, 200, 403, 200];
const CONTROL: [u16; 5] = [401, 403, 403, 403, 200];

/// A zone's lighting, and the route as the document names it.
const LAWN: &str = "/api/v1/control/remiseparken/zones/lawn/lighting";
const LIGHTING: &str = "/api/v1/control/{site}/{kind}/{id}/lighting";

#[test]
fn every_route_answers_each_role_exactly_as_it_may() {
    let _serial = one_at_a_time();
    let mut broker = Mosquitto::start();
    // Partners get counts rounded to multiples of 60: an evening hour of a quiet zone is less.
    let mut gateway = Gateway::new(
        &broker.url(),
        "[usage]\nsuppress_below = 60\n\n[energy]\ntariff_per_kwh = 2.5\n",
    );
    gateway.start();
    let port = gateway.http_port();
    let config = gateway.config_path().to_string_lossy().into_owned();
    let site = Site::load(&remiseparken_file()).unwrap();

    // A lamp failure in the busiest zone, and two of its sensors failing for good: open
    // alerts for the crews, figures for the zones.
    let story = Scenario::LampFailureInBusyZone
        .story(
            std::slice::from_ref(&site),
            jiff::Timestamp::now().as_millisecond(),
            3,
            true,
        )
        .unwrap();
    let broken: Vec<String> = story.targets.iter().take(2).cloned().collect();
    let zone = site.node(&broken[0]).unwrap().zone.clone().unwrap();
    let node_ids: Vec<&str> = site.nodes.iter().map(|n| n.id.as_str()).collect();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("broken.toml");
    let faults: Vec<String> = broken.iter().map(|n| format!("dead@{n}=+2h")).collect();
    std::fs::write(
        &scenario,
        format!(
            "base = \"lamp-failure-in-busy-zone\"\nfaults = \"{}\"\n",
            faults.join(",")
        ),
    )
    .unwrap();
    let tokens: Vec<String> = WHO[1..]
        .iter()
        .map(|role| create_token(&config, role))
        .collect();
    // Live updates, followed by an operator and by a partner while it all happens.
    let live_operator = Listener::open(port, "/api/v1/events", Credential::Bearer(&tokens[3]));
    let live_partner = Listener::open(port, "/api/v1/events", Credential::Bearer(&tokens[1]));
    let state = tempfile::tempdir().unwrap();
    let sim = Parklight::spawn(&[
        "sim",
        "--broker",
        &broker.url(),
        "--state",
        &state.path().to_string_lossy(),
        "--fresh",
        "--scenario",
        &scenario.to_string_lossy(),
        "--drain-s",
        "10",
        "--seed",
        "3",
    ])
    .wait(Duration::from_secs(300));
    assert!(sim.status.success(), "{}", sim.stderr);

    let again = Parklight::spawn(&[
        "token", "create", "--config", &config, "--role", "viewer", "--name", "viewer",
    ])
    .wait(Duration::from_secs(30));
    assert!(
        !again.status.success() && again.stdout.is_empty(),
        "a name is never reused"
    );
    let credential = |who: usize| match who {
        0 => Credential::None,
        n => Credential::Bearer(&tokens[n - 1]),
    };
    let operator = Credential::Bearer(&tokens[3]);

    // Sensor faults stay open; the gateway is caught up.
    let mut open = Vec::new();
    let settled = wait_until(Duration::from_secs(60), || {
        open = request(
            port,
            "GET",
            "/api/v1/alerts?state=open&kind=sensor_fault",
            operator,
            None,
        )
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default();
        open.len() == 2 && request(port, "GET", "/readyz", Credential::None, None).status == 200
    });
    assert!(settled, "{open:#?}\n{}", gateway.log());
    // The latest changed first, as many as asked for.
    let one = request(
        port,
        "GET",
        "/api/v1/alerts?state=open&kind=sensor_fault&limit=1",
        operator,
        None,
    );
    assert_eq!(one.header("x-total-count"), Some("2"), "{:?}", one.headers);
    let one = one.json();
    let latest = open.iter().map(|a| a["ts"].as_i64().unwrap()).max();
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one[0]["ts"].as_i64(), latest, "{one}");
    // The operator saw the busy zone go dark with its severity, the alerts and the
    // nodes; the partner saw zone statuses only, without severity.
    let seen = events(&live_operator.close().body);
    let dark_zone = |(name, data): &(String, serde_json::Value)| {
        name == "zone" && data["zone"] == zone.as_str() && data["status"] == "dark"
    };
    assert!(
        seen.iter()
            .any(|e| dark_zone(e) && e.1["severity"].is_string()),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|(name, data)| name == "alert" && data["kind"] == "sensor_fault"),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|(name, data)| name == "node" && data["online"] == false),
        "{seen:#?}"
    );
    let partner = live_partner.close();
    check_body("GET", "/api/v1/events", "partnership", &partner, &node_ids);
    let told = events(&partner.body);
    assert!(told.iter().any(dark_zone), "{told:#?}");
    assert!(told.iter().all(|(name, _)| name == "zone"), "{told:#?}");
    // Only changes of status: a severity rising with people would give them away.
    let mut last = std::collections::BTreeMap::new();
    for (_, data) in &told {
        let key = (data["site"].to_string(), data["zone"].to_string());
        assert_ne!(
            last.insert(key, data["status"].clone()).as_ref(),
            Some(&data["status"]),
            "{told:#?}"
        );
    }
    let alert_ids: Vec<String> = open
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let now = jiff::Timestamp::now().as_millisecond();
    let until = now + 3_600_000;
    let series = format!(
        "/api/v1/series?site=remiseparken&zone={zone}&from={}&to={now}&step_s=60",
        story.start_ms.unwrap()
    );
    let series_of_node = format!(
        "/api/v1/series?site=remiseparken&node={}&from={}&to={now}&step_s=300",
        broken[0],
        story.start_ms.unwrap()
    );
    let usage = format!(
        "/api/v1/usage?site=remiseparken&from={}&to={now}",
        story.start_ms.unwrap()
    );
    let usage_csv = format!("{usage}&format=csv");
    // The story's night after the change, a week after a night with no history.
    let tz = parklight_core::tz::TimeZone::parse(&site.posix_tz).unwrap();
    let (year, month, day) = parklight_core::tz::civil_from_days(
        (tz.to_local(story.start_ms.unwrap()) - 12 * 3_600_000).div_euclid(86_400_000),
    );
    let change =
        format!("/api/v1/usage/change?site=remiseparken&date={year}-{month:02}-{day:02}&weeks=1");
    let change_of_zone = format!("{change}&zone={zone}&format=csv");
    let energy = usage.replace("/usage?", "/energy?");
    let energy_csv = format!("{energy}&format=csv");
    let compliance = usage.replace("/usage?", "/compliance?");
    let compliance_csv = format!("{compliance}&format=csv");
    let lawn_pole = format!(
        "/api/v1/control/remiseparken/nodes/{}/lighting",
        (site.nodes.iter())
            .find(|n| n.zone.as_deref() == Some("lawn"))
            .unwrap()
            .id
    );
    let too_fine = format!("/api/v1/series?site=remiseparken&zone={zone}&from=0&to={now}&step_s=1");

    // The table: each row asked by each of WHO, in order.
    let rows = [
        ("GET", "/healthz", Some("/healthz"), OPEN),
        ("GET", "/readyz", Some("/readyz"), OPEN),
        ("GET", "/metrics", None, OPEN),
        ("GET", "/api/v1/openapi.json", None, OPEN),
        ("GET", "/api/v1/whoami", Some("/api/v1/whoami"), SIGNED_IN),
        ("GET", "/api/v1/sites", Some("/api/v1/sites"), SIGNED_IN),
        ("GET", "/api/v1/zones", Some("/api/v1/zones"), SIGNED_IN),
        (
            "GET",
            "/api/v1/zones?site=remiseparken",
            Some("/api/v1/zones"),
            SIGNED_IN,
        ),
        (
            "GET",
            "/api/v1/zones?site=nowhere",
            Some("/api/v1/zones"),
            [401, 404, 404, 404, 404],
        ),
        ("GET", "/api/v1/nodes", Some("/api/v1/nodes"), OPERATIONS),
        ("GET", &series, Some("/api/v1/series"), OPERATIONS),
        ("GET", &series_of_node, Some("/api/v1/series"), OPERATIONS),
        (
            "GET",
            &too_fine,
            Some("/api/v1/series"),
            [401, 403, 403, 422, 422],
        ),
        ("GET", &usage, Some("/api/v1/usage"), USAGE),
        ("GET", &usage_csv, Some("/api/v1/usage"), USAGE),
        ("GET", &change, Some("/api/v1/usage/change"), USAGE),
        ("GET", &change_of_zone, Some("/api/v1/usage/change"), USAGE),
        ("GET", &energy, Some("/api/v1/energy"), CONTROL),
        ("GET", &energy_csv, Some("/api/v1/energy"), CONTROL),
        ("GET", &compliance, Some("/api/v1/compliance"), USAGE),
        ("GET", &compliance_csv, Some("/api/v1/compliance"), USAGE),
        ("GET", "/api/v1/alerts", Some("/api/v1/alerts"), OPERATIONS),
        (
            "GET",
            "/api/v1/alerts?state=bogus",
            Some("/api/v1/alerts"),
            [401, 403, 403, 422, 422],
        ),
        (
            "GET",
            "/api/v1/alerts?limit=0",
            Some("/api/v1/alerts"),
            [401, 403, 403, 422, 422],
        ),
        (
            "GET",
            "/api/v1/alerts/{alert}",
            Some("/api/v1/alerts/{id}"),
            OPERATIONS,
        ),
        (
            "GET",
            "/api/v1/alerts/a-none-1",
            Some("/api/v1/alerts/{id}"),
            [401, 403, 403, 404, 404],
        ),
        (
            "POST",
            "/api/v1/alerts/{alert}/ack",
            Some("/api/v1/alerts/{id}/ack"),
            [401, 403, 403, 204, 204],
        ),
        // Their sensors are still dead: refused, with the reason.
        (
            "POST",
            "/api/v1/alerts/{alert}/resolve",
            Some("/api/v1/alerts/{id}/resolve"),
            [401, 403, 403, 409, 409],
        ),
        (
            "GET",
            "/api/v1/silences",
            Some("/api/v1/silences"),
            OPERATIONS,
        ),
        (
            "POST",
            "/api/v1/silences",
            Some("/api/v1/silences"),
            [401, 403, 403, 201, 201],
        ),
        (
            "DELETE",
            "/api/v1/silences/{silence}",
            Some("/api/v1/silences/{id}"),
            [401, 403, 403, 204, 204],
        ),
        (
            "GET",
            "/api/v1/control/remiseparken",
            Some("/api/v1/control/{site}"),
            CONTROL,
        ),
        (
            "GET",
            "/api/v1/control/nowhere",
            Some("/api/v1/control/{site}"),
            [401, 403, 403, 403, 404],
        ),
        ("PUT", LAWN, Some(LIGHTING), CONTROL),
        // A node's lighting dimmed below its zone's class without a motion boost.
        ("PUT", &lawn_pole, Some(LIGHTING), [401, 403, 403, 403, 422]),
        (
            "PUT",
            "/api/v1/control/remiseparken/zones/nowhere/lighting",
            Some(LIGHTING),
            [401, 403, 403, 403, 404],
        ),
        (
            "PUT",
            "/api/v1/control/remiseparken/circuits/c1/lighting",
            Some(LIGHTING),
            [401, 403, 403, 403, 404],
        ),
        ("DELETE", LAWN, Some(LIGHTING), CONTROL),
        (
            "POST",
            "/api/v1/control/remiseparken/zones/lawn/override",
            Some("/api/v1/control/{site}/zones/{zone}/override"),
            CONTROL,
        ),
        (
            "GET",
            "/api/v1/control/remiseparken/audit",
            Some("/api/v1/control/{site}/audit"),
            CONTROL,
        ),
        ("POST", "/api/v1/login", Some("/api/v1/login"), SIGNED_IN),
        ("POST", "/api/v1/logout", Some("/api/v1/logout"), [204; 5]),
        ("GET", "/api/v1/events", Some("/api/v1/events"), SIGNED_IN),
        ("GET", "/api/v1/nothing-here", None, [404; 5]),
    ]
    .map(|(method, path, documented, expected)| {
        (
            path,
            Row {
                method,
                documented,
                expected,
            },
        )
    });

    let mut silences = [0i64; 5];
    let mut failures = Vec::new();
    for (path, row) in &rows {
        for (who, name) in WHO.iter().enumerate() {
            // Crews act on their own alert; each role ends the silence it set.
            let path = path
                .replace("{alert}", &alert_ids[who % 2])
                .replace("{silence}", &silences[who].to_string());
            let body = match (row.method, path.as_str()) {
                ("POST", "/api/v1/silences") => Some(json!({
                    "site": site.id, "zone": zone, "until": until, "note": format!("{name} relamping")
                })),
                ("POST", "/api/v1/login") => Some(json!({
                    "token": if who == 0 { "plk_wrong".to_owned() } else { tokens[who - 1].clone() }
                })),
                ("POST", p) if p.ends_with("/override") => {
                    Some(json!({"level": 100, "until": until}))
                }
                ("PUT", p) if p.contains("/nodes/") => Some(json!({"profile": [
                    {"at": "sunset", "level": 100}, {"at": "22:00", "level": 10, "class": "P6"}
                ]})),
                ("PUT", _) => Some(json!({"profile": [{"at": "sunset", "level": 100}]})),
                ("POST", _) => Some(json!({"note": "on our way"})),
                _ => None,
            };
            let answer = if path == "/api/v1/events" {
                let stream = Listener::open(port, &path, credential(who));
                std::thread::sleep(Duration::from_millis(300));
                stream.close()
            } else {
                request(port, row.method, &path, credential(who), body.as_ref())
            };
            if answer.status != row.expected[who] {
                failures.push(format!(
                    "{} {path} as {name}: {} (expected {}): {}",
                    row.method, answer.status, row.expected[who], answer.body
                ));
                continue;
            }
            check_body(row.method, &path, name, &answer, &node_ids);
            if row.method == "POST" && path == "/api/v1/silences" && answer.status == 201 {
                silences[who] = answer.json()["id"].as_i64().unwrap();
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Energy: every Remiseparken lamp meters its power; priced at the tariff, and no
    // day-burner in this story.
    let spent = request(port, "GET", &energy, operator, None).json();
    let total = &spent["total"];
    let kwh = total["kwh"].as_f64().unwrap();
    assert!(kwh > 0.0, "{spent:#}");
    assert_eq!(total["metered_kwh"].as_f64(), Some(kwh), "{total:#}");
    assert!(
        (total["cost"].as_f64().unwrap() - 2.5 * kwh).abs() < 1e-9,
        "{total:#}"
    );
    assert!(
        total["daylight_kwh"].as_f64().unwrap() < 0.05 * kwh,
        "{total:#}"
    );
    let csv_rows = request(port, "GET", &energy_csv, operator, None)
        .body
        .lines()
        .count()
        - 1;
    let nights: usize = (spent["zones"].as_array().unwrap().iter())
        .map(|z| z["nights"].as_array().unwrap().len())
        .sum();
    assert_eq!(csv_rows, nights);
    // Compliance: the failing zone was below its class for a while, and its lamps'
    // faults were repaired within the story (an hour after they failed).
    let judged = request(port, "GET", &compliance, operator, None).json();
    let failing = (judged["zones"].as_array().unwrap().iter())
        .find(|z| z["zone"] == zone.as_str())
        .unwrap();
    let months = failing["months"].as_array().unwrap();
    let below: f64 = months
        .iter()
        .map(|m| m["below_class_hours"].as_f64().unwrap())
        .sum();
    assert!(below > 0.0, "{failing:#}");
    let repairs: Vec<f64> = (months.iter())
        .flat_map(|m| m["faults"].as_array().unwrap().clone())
        .filter(|f| f["kind"] == "lamp_fault")
        .filter_map(|f| f["hours_to_repair"].as_f64())
        .collect();
    assert!(!repairs.is_empty(), "{failing:#}");
    assert!(
        repairs.iter().all(|h| (0.5..=2.0).contains(h)),
        "{repairs:?}"
    );
    // Partners: fault counts, no single fault (each is a node's history).
    let shared = request(
        port,
        "GET",
        &compliance,
        Credential::Bearer(&tokens[1]),
        None,
    )
    .json();
    let months: Vec<Value> = (shared["zones"].as_array().unwrap().iter())
        .flat_map(|z| z["months"].as_array().unwrap().clone())
        .collect();
    assert!(
        months.iter().all(|m| m["faults"] == json!([])),
        "{shared:#}"
    );
    let counted: u64 = months
        .iter()
        .map(|m| m["fault_count"].as_u64().unwrap())
        .sum();
    assert!(counted > 0, "{shared:#}");
    // Nor a median of fewer than three repairs: one's own time, or the mean of two.
    for month in &months {
        if month["repaired_count"].as_u64().unwrap() < 3 {
            assert!(month["median_hours_to_repair"].is_null(), "{month}");
        }
    }

    // The document validates as OpenAPI 3.1 and lists exactly the routes of the table.
    let document = request(port, "GET", "/api/v1/openapi.json", Credential::None, None);
    let spec = oas3::from_json(&document.body).expect("a valid OpenAPI document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let listed: BTreeSet<(String, String)> = (spec.paths.iter().flatten())
        .flat_map(|(path, item)| {
            item.methods()
                .into_iter()
                .map(move |(method, _)| (method.to_string(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = (rows.iter())
        .filter_map(|(_, row)| Some((row.method.to_owned(), row.documented?.to_owned())))
        .collect();
    assert_eq!(listed, served);

    // What each role sees of the zones: operators the figures, partners the status only.
    let zones = request(port, "GET", "/api/v1/zones", operator, None).json();
    let features = zones["features"].as_array().unwrap();
    assert_eq!(features.len(), site.zones.len());
    for zone in &site.zones {
        let feature = (features.iter())
            .find(|f| f["properties"]["zone"] == zone.id.as_str())
            .unwrap_or_else(|| panic!("zone {} drawn", zone.id));
        let ring: Vec<[f64; 2]> =
            serde_json::from_value(feature["geometry"]["coordinates"][0].clone()).unwrap();
        assert_eq!(ring, zone.ring);
        assert!(
            feature["properties"]["latest"]["detections"].is_u64(),
            "{feature:#}"
        );
    }
    let nodes = request(port, "GET", "/api/v1/nodes", operator, None).json();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), site.nodes.len());
    for (broken, id) in broken.iter().zip(&alert_ids) {
        let _ = id;
        let node = nodes.iter().find(|n| n["node"] == broken.as_str()).unwrap();
        assert!(
            !node["open_alerts"].as_array().unwrap().is_empty(),
            "{node:#}"
        );
    }

    // The busy zone's lux against what its class required, minute by minute: dark while
    // its lamps were out.
    let points = request(port, "GET", &series, operator, None).json()["points"].clone();
    let points = points.as_array().unwrap();
    assert!(points.len() > 60, "{}", points.len());
    let dark: Vec<&serde_json::Value> = points.iter().filter(|p| p["status"] == "dark").collect();
    assert!(!dark.is_empty(), "{points:#?}");
    // (The minute the lamps go out may still be bright.)
    let below = (dark.iter())
        .filter(|p| p["lux_avg"].as_f64().unwrap() < p["required_avg"].as_f64().unwrap())
        .count();
    assert!(below * 2 > dark.len(), "{dark:#?}");

    // Partners get each hour's counts rounded to a multiple of 60, a figure told 0 shown
    // as suppressed: a heat cell (one hour of this night) is off by less than 60, a
    // total by less than 60 an hour.
    let start = story.start_ms.unwrap();
    let hour = format!(
        "/api/v1/usage?site=remiseparken&from={}&to={}",
        start - start % 3_600_000,
        now - now % 3_600_000
    );
    // Partners get whole hours that ended an hour ago or more: the operator asks for
    // the same.
    let shared = request(port, "GET", &hour, credential(2), None).json();
    assert_eq!(shared["suppressed_below"], 60);
    let (from, to) = (
        shared["from"].as_i64().unwrap(),
        shared["to"].as_i64().unwrap(),
    );
    assert!(to <= now - 3_600_000 && to % 3_600_000 == 0, "{shared}");
    let hours = (to - from) as u64 / 3_600_000;
    assert!(hours < 7 * 24, "a heat cell is one hour");
    let same = format!("/api/v1/usage?site=remiseparken&from={from}&to={to}");
    let full = request(port, "GET", &same, operator, None).json();
    let mut small_hidden = 0;
    for (all, told) in full["zones"]
        .as_array()
        .unwrap()
        .iter()
        .zip(shared["zones"].as_array().unwrap())
    {
        // Each figure, and how many hours it sums.
        let figures = |z: &serde_json::Value| {
            let mut values: Vec<(serde_json::Value, u64)> = (z["heat"].as_array().unwrap())
                .iter()
                .flat_map(|row| row.as_array().unwrap().clone())
                .map(|cell| (cell, 1))
                .collect();
            for figure in [
                "detections",
                "after_dark_detections",
                "detections_in_dark_zone",
            ] {
                values.push((z[figure].clone(), hours));
            }
            values
        };
        for ((count, hours), (shown, _)) in figures(all).iter().zip(figures(told)) {
            let count = count.as_u64().expect("operators see every count");
            small_hidden += usize::from(count > 0 && shown.is_null());
            let told = shown.as_u64().unwrap_or(0);
            assert_eq!(told % 60, 0, "{told}");
            assert!(told.abs_diff(count) < 60 * hours, "{told} told for {count}");
            assert!(count > 0 || shown.is_null(), "0 is told as fewer than 60");
        }
    }
    assert!(small_hidden > 0, "no small count hidden: {full:#}");

    // Each acknowledgement is its token's name's, with its note, in the history.
    for (id, by) in alert_ids.iter().zip(["operator", "maintenance"]) {
        let acked = request(port, "GET", &format!("/api/v1/alerts/{id}"), operator, None).json();
        assert_eq!(
            (acked["state"].as_str(), acked["by"].as_str()),
            (Some("acknowledged"), Some(by))
        );
        let history = acked["history"].as_array().unwrap();
        assert!(
            history
                .iter()
                .any(|h| h["what"] == "acknowledged" && h["by"] == by && h["note"] == "on our way"),
            "{acked:#}"
        );
    }

    // A browser session: HttpOnly, SameSite=Strict, not Secure over plain HTTP; it ends
    // on logout, and with its token.
    let login = |token: &str| {
        request(
            port,
            "POST",
            "/api/v1/login",
            Credential::None,
            Some(&json!({"token": token})),
        )
    };
    let session = |answer: &Answer| {
        let cookie = answer
            .header("set-cookie")
            .expect("a session cookie")
            .to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(!cookie.contains("Secure"), "{cookie}");
        cookie.split(';').next().unwrap().to_owned()
    };
    let cookie = session(&login(&tokens[2]));
    let who = request(
        port,
        "GET",
        "/api/v1/whoami",
        Credential::Cookie(&cookie),
        None,
    )
    .json();
    assert_eq!(who, json!({"name": "maintenance", "role": "maintenance"}));
    assert_eq!(
        request(
            port,
            "GET",
            "/api/v1/alerts",
            Credential::Cookie(&cookie),
            None
        )
        .status,
        200
    );
    assert_eq!(
        request(
            port,
            "POST",
            "/api/v1/logout",
            Credential::Cookie(&cookie),
            None
        )
        .status,
        204
    );
    assert_eq!(
        request(
            port,
            "GET",
            "/api/v1/alerts",
            Credential::Cookie(&cookie),
            None
        )
        .status,
        401
    );
    let cookie = session(&login(&tokens[1]));
    let stream = Listener::open(port, "/api/v1/events", Credential::Cookie(&cookie));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!stream.ended());
    let revoked = Parklight::spawn(&["token", "revoke", "partnership", "--config", &config])
        .wait(Duration::from_secs(30));
    assert!(revoked.status.success(), "{}", revoked.stderr);
    assert_eq!(
        request(
            port,
            "GET",
            "/api/v1/zones",
            Credential::Cookie(&cookie),
            None
        )
        .status,
        401
    );
    assert_eq!(
        request(port, "GET", "/api/v1/zones", credential(2), None).status,
        401
    );
    // Its open event stream ends too.
    let ended = wait_until(Duration::from_secs(10), || stream.ended());
    assert!(ended, "the stream outlived its token");
    let closed = stream.close();
    assert_eq!(closed.header("content-type"), Some("text/event-stream"));

    // Failed attempts from one address are cut off, and then so is that address. Two
    // failed already this minute (a wrong token at login, the revoked one); cookies
    // never count.
    let mut unauthorized = 0;
    let refused = (0..20).any(|_| {
        match request(
            port,
            "GET",
            "/api/v1/zones",
            Credential::Bearer("plk_guess"),
            None,
        )
        .status
        {
            401 => {
                unauthorized += 1;
                false
            }
            status => status == 429,
        }
    });
    assert!(
        refused && unauthorized == 8,
        "{unauthorized} guesses allowed"
    );
    let blocked = request(port, "GET", "/api/v1/zones", operator, None);
    assert_eq!(blocked.status, 429);
    assert_eq!(blocked.json()["code"], "too_many_attempts");
    assert_eq!(
        request(port, "GET", "/healthz", Credential::None, None).status,
        200
    );
    // Without its broker the gateway is up but not ready, and says why.
    broker.kill();
    let mut answer = None;
    let unready = wait_until(Duration::from_secs(30), || {
        let ready = request(port, "GET", "/readyz", Credential::None, None);
        let down = ready.status == 503;
        answer = Some(ready.json());
        down
    });
    let answer = answer.unwrap();
    assert!(unready, "{answer}");
    assert_eq!(
        (&answer["ready"], &answer["broker"], &answer["store"]),
        (&json!(false), &json!(false), &json!(true)),
        "{answer}"
    );
    assert_eq!(
        request(port, "GET", "/healthz", Credential::None, None).status,
        200
    );
    gateway.stop();
}

/// Every answer is JSON with a stable code when it is an error; a partner or a viewer
/// never gets a node's id, a severity or a detection count.
fn check_body(method: &str, path: &str, who: &str, answer: &Answer, nodes: &[&str]) {
    if answer.status >= 400 {
        let body = answer.json();
        assert!(
            body["code"].is_string() && body["message"].is_string(),
            "{method} {path}: {body}"
        );
    }
    if who == "partnership" || who == "viewer" {
        for node in nodes {
            assert!(
                !answer.body.contains(&format!("\"{node}\"")),
                "{method} {path} as {who}: {node} in {}",
                answer.body
            );
        }
        if who == "partnership" && path.starts_with("/api/v1/usage") && answer.status == 200 {
            let counts = usage_counts(path, answer);
            assert!(!counts.is_empty(), "{}", answer.body);
            assert!(
                counts.iter().all(|c| *c == 0 || *c >= 60),
                "{method} {path}: a count below k: {counts:?}"
            );
        }
        if !path.starts_with("/api/v1/usage") && path != "/api/v1/openapi.json" {
            for key in ["severity", "detections", "lux_avg", "lux_min", "latest"] {
                assert!(
                    !answer.body.contains(&format!("\"{key}\"")),
                    "{method} {path} as {who}: {key} in {}",
                    answer.body
                );
            }
        }
    }
}

/// The detection counts in a usage answer.
fn usage_counts(path: &str, answer: &Answer) -> Vec<u64> {
    let csv = path.contains("format=csv");
    let number = |text: &str| text.parse::<f64>().ok().map(|n| n as u64);
    if path.starts_with("/api/v1/usage/change") {
        if csv {
            // figure,method,before,after,…: the detections' totals.
            return (answer.body.lines().skip(1))
                .filter(|l| l.starts_with("after_dark_detections,"))
                .flat_map(|l| {
                    l.split(',')
                        .skip(2)
                        .take(2)
                        .filter_map(number)
                        .collect::<Vec<_>>()
                })
                .collect();
        }
        let body = answer.json();
        let mut counts = Vec::new();
        for pair in body["pairs"].as_array().unwrap() {
            for key in ["before", "after", "controls_before", "controls_after"] {
                counts.extend(pair[key].as_u64());
            }
        }
        for method in ["matched", "naive"] {
            for side in ["before", "after"] {
                let total = &body["after_dark_detections"][method][side];
                counts.extend(total.as_f64().map(|n| n as u64));
            }
        }
        return counts;
    }
    if csv {
        return (answer.body.lines().skip(1))
            .filter_map(|l| l.rsplit(',').next()?.parse().ok())
            .collect();
    }
    let mut counts = Vec::new();
    for zone in answer.json()["zones"].as_array().unwrap() {
        assert_eq!(
            zone["occupied_dark_minutes"].is_null(),
            zone["detections_in_dark_zone"].is_null(),
            "{zone}"
        );
        // No difference of what is shown is a small count: the total less the cells,
        // the total less those after dark, those after dark less those in the dark.
        let count = |key: &str| zone[key].as_u64();
        let cells: u64 = (zone["heat"].as_array().unwrap().iter())
            .flat_map(|r| r.as_array().unwrap().iter().filter_map(|c| c.as_u64()))
            .sum();
        let differences = [
            count("detections").map(|all| all - cells),
            count("detections")
                .zip(count("after_dark_detections"))
                .map(|(a, b)| a - b),
            (count("after_dark_detections"))
                .zip(count("detections_in_dark_zone"))
                .map(|(a, b)| a - b),
        ];
        counts.extend(differences.into_iter().flatten());
        for (key, value) in zone.as_object().unwrap() {
            if key == "heat" {
                let cells = value
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r.as_array().unwrap().clone());
                counts.extend(cells.filter_map(|c| c.as_u64()));
            } else if !["after_dark_share", "occupied_dark_minutes"].contains(&key.as_str()) {
                // Minutes are no count of people: shown from k detections in the dark.
                counts.extend(value.as_u64());
            }
        }
    }
    counts
}

#[test]
fn with_a_certificate_the_api_speaks_https_only_and_its_cookie_is_secure() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let certificates = tempfile::tempdir().unwrap();
    parklight_tests::tls::certificates(certificates.path());
    let key = certificates.path().join("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.set_tls(&certificates.path().join("server.pem"), &key);
    gateway.start();
    let port = gateway.http_port();
    let ca = certificates.path().join("ca.pem");
    let health = request_tls(port, &ca, "GET", "/healthz", Credential::None, None);
    assert_eq!(health.map(|a| a.status), Some(200), "{}", gateway.log());
    let config = gateway.config_path().to_string_lossy().into_owned();
    let viewer = create_token(&config, "viewer");
    let zones = request_tls(
        port,
        &ca,
        "GET",
        "/api/v1/zones",
        Credential::Bearer(&viewer),
        None,
    )
    .unwrap();
    assert_eq!(zones.status, 200, "{}", zones.body);
    let login = request_tls(
        port,
        &ca,
        "POST",
        "/api/v1/login",
        Credential::None,
        Some(&json!({"token": viewer})),
    )
    .unwrap();
    let cookie = login.header("set-cookie").unwrap_or_default();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Another authority's client refuses the certificate; plain HTTP gets no answer.
    let stranger = tempfile::tempdir().unwrap();
    parklight_tests::tls::certificates(stranger.path());
    let stranger_ca = stranger.path().join("ca.pem");
    assert!(
        request_tls(
            port,
            &stranger_ca,
            "GET",
            "/healthz",
            Credential::None,
            None
        )
        .is_none()
    );
    assert!(parklight_tests::gateway::http_get(port, "/healthz").is_none());
    gateway.stop();
}
