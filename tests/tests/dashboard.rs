//! The dashboard in a real browser (headless Chromium through chromedriver): with its own
//! Mosquitto, gateway and the simulator playing a lamp failure, an operator sees every
//! zone drawn, the failing zone turn dark without a reload, and acknowledges its alert on
//! the page; a partner finds no per-node data and no crew or control pages. Screenshots
//! of each step are kept in `target/tmp/dashboard-*`.

use std::path::PathBuf;
use std::time::Duration;

use parklight_sim::Scenario;
use parklight_site::Site;
use parklight_tests::api::{Credential, create_token, request};
use parklight_tests::broker::Mosquitto;
use parklight_tests::browser::Browser;
use parklight_tests::gateway::{Gateway, remiseparken_file};
use parklight_tests::process::Parklight;
use parklight_tests::{free_port, one_at_a_time, wait_until};

fn artefacts(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{test}"))
}

#[test]
fn an_operator_sees_a_zone_go_dark_live_and_acknowledges_it_and_a_partner_sees_no_node() {
    let _serial = one_at_a_time();
    let broker = Mosquitto::start();
    let mut gateway = Gateway::new(&broker.url(), "");
    gateway.start();
    let port = gateway.http_port();
    let url = format!("http://127.0.0.1:{port}/");
    let config = gateway.config_path().to_string_lossy().into_owned();
    let (operator, partner) = (
        create_token(&config, "operator"),
        create_token(&config, "partnership"),
    );
    let site = Site::load(&remiseparken_file()).unwrap();
    let story = Scenario::LampFailureInBusyZone
        .story(
            std::slice::from_ref(&site),
            jiff::Timestamp::now().as_millisecond(),
            5,
            true,
        )
        .unwrap();
    let zone = site.node(&story.targets[0]).unwrap().zone.clone().unwrap();
    let key = format!("{}/{zone}", site.id);
    // The lamps stay broken, so the alert is still open when the crew gets to it.
    let broken_after = story.faults.scripted[0].after.as_secs();
    let faults: Vec<String> = (story.targets.iter())
        .map(|node| format!("lamp@{node}=+{broken_after}s"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("for-good.toml");
    // The lamp-failure night, its lamps failing for good.
    let start = jiff::Timestamp::from_millisecond(story.start_ms.unwrap()).unwrap();
    let wall_s = (broken_after + 7200) as f64 / story.speed;
    std::fs::write(
        &scenario,
        format!(
            "start = \"{start}\"\nspeed = {}\nduration_s = {wall_s}\nfaults = \"{}\"\n",
            story.speed,
            faults.join(",")
        ),
    )
    .unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut browser = Browser::start(&artefacts("operator")).await;
        browser.log_in(&url, &operator).await;
        let drawn = browser.eval("document.querySelectorAll('svg.map path[data-zone]').length").await;
        assert_eq!(drawn, site.zones.len(), "every zone drawn");
        assert!(browser.wait_for(Duration::from_secs(10), "document.querySelectorAll('svg.map circle').length > 0").await);
        browser.screenshot("operator-map").await;
        // Marked, so a reload would show.
        browser.eval("window.parklightMarker = 'not reloaded'").await;

        let state = tempfile::tempdir().unwrap();
        let sim = Parklight::spawn(&[
            "sim", "--broker", &broker.url(), "--state", &state.path().to_string_lossy(), "--fresh",
            "--scenario", &scenario.to_string_lossy(), "--drain-s", "10", "--seed", "5",
        ]);
        // Dark with people in it: severity high (or critical, if a window brought many).
        let dark = format!(
            "document.querySelector('path[data-zone=\"{key}\"]').getAttribute('class') === 'dark' \
             && document.querySelector('path[data-zone=\"{key}\"]').getAttribute('data-severity').match(/^(high|critical)$/)"
        );
        let went_dark = browser.wait_for(Duration::from_secs(120), &dark).await;
        browser.screenshot("zone-dark-live").await;
        assert!(went_dark, "{}", gateway.log());
        assert_eq!(browser.eval("window.parklightMarker").await, "not reloaded");
        let finished = sim.wait(Duration::from_secs(300));
        assert!(finished.status.success(), "{}", finished.stderr);

        // The crew's page: the zone's alerts, acknowledged with a note.
        browser.client.goto(&format!("{url}#/alerts")).await.unwrap();
        let in_zone = format!(
            "[...document.querySelectorAll('tr[data-alert]')].find(r => r.dataset.kind === 'dark_zone' \
             && r.dataset.zone === '{zone}')"
        );
        let listed = browser.wait_for(Duration::from_secs(30), &in_zone).await;
        browser.screenshot("alerts").await;
        let alerts = request(port, "GET", "/api/v1/alerts", Credential::Bearer(&operator), None);
        assert!(listed, "no alert of {zone} listed: {}", alerts.body);
        let id = browser.eval(&format!("{in_zone}.dataset.alert")).await;
        let id = id.as_str().unwrap().to_owned();
        browser
            .eval(&format!(
                "(() => {{ const row = document.querySelector('tr[data-alert=\"{id}\"]'); \
                 row.querySelector('input').value = 'relamping tonight'; \
                 row.querySelector('button[data-action=ack]').click(); return true; }})()"
            ))
            .await;
        let acknowledged = format!(
            "document.querySelector('tr[data-alert=\"{id}\"]')?.dataset.state === 'acknowledged'"
        );
        assert!(browser.wait_for(Duration::from_secs(20), &acknowledged).await, "{}", gateway.log());
        browser.screenshot("acknowledged").await;
        let stored = request(port, "GET", &format!("/api/v1/alerts/{id}"), Credential::Bearer(&operator), None).json();
        assert_eq!((stored["state"].as_str(), stored["by"].as_str(), stored["note"].as_str()),
            (Some("acknowledged"), Some("operator"), Some("relamping tonight")));

        // The failing zone's page: its lux against what its class requires through last
        // night, and the people who passed (a bar of detections).
        browser.client.goto(&format!("{url}#/zone/remiseparken/{zone}")).await.unwrap();
        let charted = "document.querySelector('svg.chart polyline.lux') \
            && document.querySelector('svg.chart polyline.required') \
            && [...document.querySelectorAll('svg.chart rect.detections')].some(r => r.getAttribute('height') > 0)";
        assert!(browser.wait_for(Duration::from_secs(20), charted).await, "{}", gateway.log());
        browser.screenshot("zone-page").await;

        // The control page: every zone; a class that does not exist is refused with its
        // field named, and the lawn at 90 % is saved and in force.
        browser.client.goto(&format!("{url}#/control")).await.unwrap();
        let rows = "document.querySelectorAll('table[data-control] tbody tr[data-zone]').length";
        assert!(browser.wait_for(Duration::from_secs(20), &format!("{rows} === {}", site.zones.len())).await);
        let edit = |class: &str| format!(
            "(() => {{ const row = document.querySelector('tr[data-zone=lawn]'); \
             const step = row.querySelector('.step'); step.querySelector('[name=level]').value = '90'; \
             step.querySelector('[name=class]').value = '{class}'; \
             row.querySelector('button[data-action=save]').click(); return true; }})()"
        );
        browser.eval(&edit("P9")).await;
        let refused = "document.querySelector('tr[data-zone=lawn] .message.error')?.textContent.startsWith('profile[0].class')";
        assert!(browser.wait_for(Duration::from_secs(10), refused).await);
        browser.screenshot("control-refused").await;
        browser.eval(&edit("")).await;
        let saved = "document.querySelector('tr[data-zone=lawn]')?.dataset.source === 'zone' \
            && document.querySelector('tr[data-zone=lawn] .message').textContent.startsWith('Sent to')";
        assert!(browser.wait_for(Duration::from_secs(20), saved).await, "{}", gateway.log());
        browser.screenshot("control-saved").await;
        let control = request(port, "GET", "/api/v1/control/remiseparken", Credential::Bearer(&operator), None).json();
        let lawn = control["zones"].as_array().unwrap().iter().find(|z| z["zone"] == "lawn").unwrap();
        assert_eq!((lawn["set_by"].as_str(), &lawn["lighting"]["profile"][0]["level"]), (Some("operator"), &serde_json::json!(90)));

        // A partner: zones only; no node, no crew page.
        browser.client.find(fantoccini::Locator::Css("#logout")).await.unwrap().click().await.unwrap();
        assert!(browser.wait_for(Duration::from_secs(10), "!document.querySelector('#login').hidden").await);
        browser.log_in(&url, &partner).await;
        let drawn = browser.eval("document.querySelectorAll('svg.map path[data-zone]').length").await;
        assert_eq!(drawn, site.zones.len());
        assert_eq!(browser.eval("document.querySelectorAll('svg.map circle').length").await, 0);
        assert_eq!(browser.eval("document.querySelector('a[href=\"#/alerts\"]') === null").await, true);
        // The crews' and the operators' pages, asked for by address: the map instead.
        for page in ["alerts", "control"] {
            browser.client.goto(&format!("{url}#/{page}")).await.unwrap();
            assert!(browser.wait_for(Duration::from_secs(10), "document.querySelector('svg.map')").await);
            assert_eq!(browser.eval("document.querySelector('table[data-control]') === null").await, true);
        }
        // Nothing of a node anywhere in the page, text, attributes or titles.
        let page = browser.eval("document.documentElement.outerHTML").await;
        let page = page.as_str().unwrap();
        for node in &site.nodes {
            assert!(!page.contains(&node.id), "{} on the partner's page", node.id);
        }
        assert!(!page.contains("#/control") && !page.contains("Acknowledge"), "{page}");
        browser.screenshot("partner-map").await;
        // Their page: use by zone, hour and weekday, nothing per node.
        browser.client.goto(&format!("{url}#/usage")).await.unwrap();
        assert!(browser.wait_for(Duration::from_secs(20), "document.querySelector('table[data-usage] tbody tr')").await);
        let rows = browser.eval("document.querySelectorAll('table[data-usage] tbody tr').length").await;
        assert_eq!(rows, site.zones.len());
        let page = browser.eval("document.documentElement.outerHTML").await;
        for node in &site.nodes {
            assert!(!page.as_str().unwrap().contains(&node.id), "{} on the usage page", node.id);
        }
        browser.screenshot("partner-usage").await;
        // Before and after a date: the form asks the API and shows its figures (one night
        // of history here, so no pairs of nights yet).
        let controls = browser
            .eval(
                "(() => { const form = document.querySelector('section form'); \
                 const zone = form.querySelector('[name=zone]'); zone.value = 'skatepark'; \
                 zone.dispatchEvent(new Event('change')); form.querySelector('[name=date]').value = '2026-11-20'; \
                 form.requestSubmit(); return form.querySelectorAll('input[name=control]:checked').length; })()",
            )
            .await;
        assert_eq!(controls, site.zones.len() - 1);
        let table = "document.querySelector('[data-change] tr[data-figure][data-method=matched]')";
        assert!(browser.wait_for(Duration::from_secs(20), table).await);
        let text = browser.eval("document.querySelector('[data-change]').textContent").await;
        assert!(text.as_str().unwrap().contains("0 pairs of nights"), "{text}");
        browser.screenshot("partner-before-after").await;
        browser.close().await;
    });
    gateway.stop();
}

#[test]
fn the_demo_serves_the_dashboard_and_draws_its_site() {
    let _serial = one_at_a_time();
    let (broker_port, http_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let demo = Parklight::demo(broker_port, http_port, dir.path());
    let mut printed = String::new();
    let told = wait_until(Duration::from_secs(30), || {
        printed = demo.printed();
        printed.contains("  token ")
    });
    assert!(told, "{printed}");
    let line = |label: &str| {
        (printed.lines())
            .find_map(|l| l.trim_start().strip_prefix(label))
            .map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_else(|| panic!("no {label} in {printed}"))
    };
    let (url, token) = (line("dashboard"), line("token"));
    assert_eq!(url, format!("http://127.0.0.1:{http_port}/"));
    let site = Site::remiseparken();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut browser = Browser::start(&artefacts("demo")).await;
        browser.log_in(&url, &token).await;
        let drawn = browser
            .eval("document.querySelectorAll('svg.map path[data-zone]').length")
            .await;
        assert_eq!(drawn, site.zones.len());
        let title = browser
            .eval("document.querySelector('#view h1').innerText")
            .await;
        assert_eq!(title, site.name.as_str());
        browser.screenshot("demo-map").await;
        browser.close().await;
    });
    demo.interrupt();
    let finished = demo.wait(Duration::from_secs(60));
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.stdout.contains("dark zones") && finished.stdout.contains("open alerts"),
        "{}",
        finished.stdout
    );
}
