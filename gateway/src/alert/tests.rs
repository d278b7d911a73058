use std::collections::BTreeSet;

use super::*;

const MIN: i64 = 60_000;

/// A topology by hand: (node, site, zone, circuit).
fn topology(nodes: &[(&str, &str, Option<&str>, &str)]) -> Topology {
    let mut t = Topology::default();
    for (node, site, zone, circuit) in nodes {
        let place = (
            site.to_string(),
            zone.map(str::to_owned),
            circuit.to_string(),
        );
        t.nodes.insert(node.to_string(), place);
        *t.sites.entry(site.to_string()).or_default() += 1;
        if let Some(zone) = zone {
            t.zones.insert((site.to_string(), zone.to_string()));
        }
        *t.circuits
            .entry((site.to_string(), circuit.to_string()))
            .or_default() += 1;
    }
    t
}

/// Ten nodes on site `s`: n0..n4 on circuit `a` in zone `za`, n5..n9 on `b` in `zb`.
fn park() -> Manager {
    let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let nodes: Vec<(&str, &str, Option<&str>, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (zone, circuit) = if i < 5 { ("za", "a") } else { ("zb", "b") };
            (n.as_str(), "s", Some(zone), circuit)
        })
        .collect();
    Manager::new(topology(&nodes), Settings::default(), State::default())
}

fn node(kind: Kind, node: &str, active: bool, severity: Severity) -> Transition {
    Transition {
        kind,
        site: "s".into(),
        zone: None,
        node: Some(node.into()),
        active,
        severity,
        since: 1_000,
        ts: 2_000,
        detail: format!("{} {node}", kind.as_str()),
    }
}

fn zone(kind: Kind, zone: &str, active: bool, severity: Severity) -> Transition {
    Transition {
        zone: Some(zone.into()),
        node: None,
        ..node(kind, "x", active, severity)
    }
}

fn offline(n: &str, active: bool) -> Transition {
    node(Kind::NodeOffline, n, active, Severity::High)
}

/// Feeds `m` and returns what came out.
fn feed(m: &mut Manager, t: &Transition, now: i64) -> Vec<Change> {
    let mut out = Vec::new();
    m.condition(t, now, &[], &mut out);
    out
}

fn request(id: &str, action: Action, by: &str, note: &str) -> Request {
    Request {
        alert: id.into(),
        action,
        by: by.into(),
        note: note.into(),
    }
}

fn tick(m: &mut Manager, now: i64, silences: &[Silence]) -> Vec<Change> {
    let mut out = Vec::new();
    m.tick(now, silences, &mut out);
    out
}

fn summary(changes: &[Change]) -> Vec<(AlertKind, What, u32, bool)> {
    changes
        .iter()
        .map(|c| (c.alert.kind, c.what, c.alert.rev, c.page))
        .collect()
}

#[test]
fn an_alert_is_raised_acknowledged_raised_again_by_a_severity_rise_and_resolved() {
    let mut m = park();
    let raised = feed(&mut m, &zone(Kind::DarkZone, "za", true, Severity::Low), 0);
    assert_eq!(
        summary(&raised),
        [(AlertKind::DarkZone, What::Raised, 1, true)]
    );
    let alert = &raised[0].alert;
    assert_eq!(
        (alert.state, alert.since, alert.ts),
        (AlertState::Raised, 1_000, 0)
    );
    let id = alert.id.clone();

    let mut out = Vec::new();
    m.act(
        &request(&id, Action::Acknowledge, "crew-east", "on our way"),
        MIN,
        &[],
        &mut out,
    )
    .unwrap();
    assert_eq!(out[0].alert.state, AlertState::Acknowledged);
    assert_eq!(out[0].alert.by.as_deref(), Some("crew-east"));
    assert_eq!((out[0].alert.rev, out[0].page), (2, true));
    let again = m.act(
        &request(&id, Action::Acknowledge, "crew-west", ""),
        MIN,
        &[],
        &mut out,
    );
    assert!(
        again
            .unwrap_err()
            .contains("already acknowledged by crew-east")
    );

    // The same severity again changes nothing; a higher one pages even when acknowledged.
    assert!(
        feed(
            &mut m,
            &zone(Kind::DarkZone, "za", true, Severity::Low),
            2 * MIN
        )
        .is_empty()
    );
    let rose = feed(
        &mut m,
        &zone(Kind::DarkZone, "za", true, Severity::Critical),
        3 * MIN,
    );
    assert_eq!(
        summary(&rose),
        [(AlertKind::DarkZone, What::SeverityRose, 3, true)]
    );
    assert_eq!(rose[0].alert.state, AlertState::Raised);
    assert_eq!(
        (rose[0].alert.by.clone(), rose[0].alert.id.clone()),
        (None, id.clone())
    );

    let refused = m.act(
        &request(&id, Action::Resolve, "crew-east", "fixed"),
        4 * MIN,
        &[],
        &mut out,
    );
    assert!(
        refused
            .unwrap_err()
            .contains("while its condition is active")
    );
    let cleared = feed(
        &mut m,
        &zone(Kind::DarkZone, "za", false, Severity::Critical),
        5 * MIN,
    );
    assert_eq!(
        summary(&cleared),
        [(AlertKind::DarkZone, What::Resolved, 4, true)]
    );
    assert_eq!(cleared[0].alert.detail, "dark_zone x");
    assert!(
        m.act(
            &request(&id, Action::Acknowledge, "c", ""),
            6 * MIN,
            &[],
            &mut out
        )
        .unwrap_err()
        .contains("resolved")
    );
}

#[test]
fn a_condition_back_within_the_hold_time_reopens_its_alert_and_later_is_a_new_one() {
    let mut m = park();
    let lamp = |active| node(Kind::LampFault, "n1", active, Severity::High);
    let first = feed(&mut m, &lamp(true), 0)[0].alert.id.clone();
    feed(&mut m, &lamp(false), MIN);
    let back = feed(&mut m, &lamp(true), MIN + 10 * MIN - 1);
    assert_eq!(
        summary(&back),
        [(AlertKind::LampFault, What::Reopened, 3, true)]
    );
    assert_eq!(back[0].alert.id, first);
    feed(&mut m, &lamp(false), 12 * MIN);
    // The hold time passes: forgotten, and the next is a new alert.
    tick(&mut m, 22 * MIN, &[]);
    let new = feed(&mut m, &lamp(true), 23 * MIN);
    assert_eq!(
        summary(&new),
        [(AlertKind::LampFault, What::Raised, 1, true)]
    );
    assert_ne!(new[0].alert.id, first);
}

#[test]
fn a_flapping_condition_pages_once_until_it_settles() {
    let mut m = park();
    let lamp = |active| node(Kind::LampFault, "n1", active, Severity::High);
    let mut changes = Vec::new();
    for i in 0..6 {
        changes.extend(feed(&mut m, &lamp(true), i * 2 * MIN));
        changes.extend(feed(&mut m, &lamp(false), i * 2 * MIN + MIN));
        changes.extend(tick(&mut m, i * 2 * MIN + MIN + 1, &[]));
    }
    let ids: BTreeSet<&str> = changes.iter().map(|c| c.alert.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one alert");
    let paged: Vec<What> = changes.iter().filter(|c| c.page).map(|c| c.what).collect();
    // Raised, resolved, reopened twice (two returns), then flapping once: quiet after.
    assert_eq!(
        paged,
        [
            What::Raised,
            What::Resolved,
            What::Reopened,
            What::Resolved,
            What::Reopened,
            What::Resolved,
            What::Flapping
        ]
    );
    assert_eq!(changes.len(), 12, "every change is history");
    assert!(changes.last().unwrap().alert.flapping);
    // Quiet for the hold time: settled, paged with its state (resolved).
    assert!(tick(&mut m, 11 * MIN + 10 * MIN - 1, &[]).is_empty());
    let settled = tick(&mut m, 11 * MIN + 10 * MIN, &[]);
    assert_eq!(
        summary(&settled),
        [(AlertKind::LampFault, What::Settled, 13, true)]
    );
    assert_eq!(settled[0].alert.state, AlertState::Resolved);
    assert!(!settled[0].alert.flapping);
}

#[test]
fn a_lone_node_offline_waits_the_roll_up_delay_and_one_back_in_time_is_never_an_alert() {
    let mut m = park();
    assert!(feed(&mut m, &offline("n1", true), 0).is_empty());
    assert!(tick(&mut m, MIN - 1, &[]).is_empty());
    let raised = tick(&mut m, MIN, &[]);
    assert_eq!(
        summary(&raised),
        [(AlertKind::NodeOffline, What::Raised, 1, true)]
    );
    assert_eq!(raised[0].alert.node.as_deref(), Some("n1"));
    let back = feed(&mut m, &offline("n1", false), 2 * MIN);
    assert_eq!(
        summary(&back),
        [(AlertKind::NodeOffline, What::Resolved, 2, true)]
    );

    assert!(feed(&mut m, &offline("n2", true), 3 * MIN).is_empty());
    assert!(feed(&mut m, &offline("n2", false), 4 * MIN - 1).is_empty());
    assert!(
        tick(&mut m, 10 * MIN, &[]).is_empty(),
        "back within the delay"
    );
}

#[test]
fn most_of_a_site_offline_together_is_one_power_loss_resolved_when_most_are_back() {
    let mut m = park();
    for i in 0..7 {
        assert!(feed(&mut m, &offline(&format!("n{i}"), true), i * 5_000).is_empty());
    }
    // 7 of 10 within one delay of each other: one roll-up when the first has waited
    // the delay, no node alerts.
    assert!(tick(&mut m, MIN - 1, &[]).is_empty());
    let rolled = tick(&mut m, MIN, &[]);
    assert_eq!(
        summary(&rolled),
        [(AlertKind::SitePowerLoss, What::Raised, 1, true)]
    );
    let alert = &rolled[0].alert;
    assert_eq!(
        (alert.children_count, alert.severity, alert.circuit.clone()),
        (7, Severity::Critical, None)
    );
    assert_eq!(alert.since, 1_000);
    // A straggler joins it; nobody gets a node_offline alert.
    let joined = feed(&mut m, &offline("n7", true), 70_000);
    assert_eq!(
        summary(&joined),
        [(AlertKind::SitePowerLoss, What::ChildrenJoined, 2, true)]
    );
    assert_eq!(joined[0].alert.children_count, 8);
    assert!(tick(&mut m, 10 * MIN, &[]).is_empty());
    // Back: 4 of 8 is not yet the share; the fifth is.
    for i in 0..4 {
        assert!(feed(&mut m, &offline(&format!("n{i}"), false), 11 * MIN).is_empty());
    }
    let back = feed(&mut m, &offline("n4", false), 11 * MIN);
    assert_eq!(
        summary(&back),
        [(AlertKind::SitePowerLoss, What::Resolved, 3, true)]
    );
    // n5..n7 still down a roll-up delay later: each its own alert (not rolled up again,
    // though 3 of circuit b's 5 would be its share).
    assert!(tick(&mut m, 12 * MIN - 1, &[]).is_empty());
    let after = tick(&mut m, 12 * MIN, &[]);
    assert_eq!(
        summary(&after),
        [(AlertKind::NodeOffline, What::Raised, 1, true); 3]
    );
    let nodes: Vec<_> = after
        .iter()
        .map(|c| c.alert.node.clone().unwrap())
        .collect();
    assert_eq!(nodes, ["n5", "n6", "n7"]);
}

#[test]
fn one_circuit_offline_is_its_power_loss_and_the_rest_get_their_own_alerts() {
    let mut m = park();
    for i in 5..9 {
        feed(&mut m, &offline(&format!("n{i}"), true), 0);
    }
    feed(&mut m, &offline("n0", true), 0);
    assert!(tick(&mut m, 1_000, &[]).is_empty());
    let rolled = tick(&mut m, MIN, &[]);
    assert_eq!(
        summary(&rolled),
        [
            (AlertKind::SitePowerLoss, What::Raised, 1, true),
            (AlertKind::NodeOffline, What::Raised, 1, true)
        ]
    );
    assert_eq!(rolled[0].alert.circuit.as_deref(), Some("b"));
    assert_eq!(rolled[0].alert.children, ["n5", "n6", "n7", "n8"]);
    assert_eq!(rolled[1].alert.node.as_deref(), Some("n0"));
}

#[test]
fn an_unobserved_zone_with_a_node_offline_is_inhibited_until_the_node_is_back() {
    let mut m = park();
    feed(&mut m, &offline("n1", true), 0);
    tick(&mut m, MIN, &[]);
    let unobserved = feed(
        &mut m,
        &zone(Kind::ZoneUnobserved, "za", true, Severity::Medium),
        2 * MIN,
    );
    assert_eq!(
        summary(&unobserved),
        [(AlertKind::ZoneUnobserved, What::Raised, 1, false)]
    );
    let other = feed(
        &mut m,
        &zone(Kind::ZoneUnobserved, "zb", true, Severity::Medium),
        2 * MIN,
    );
    assert!(other[0].page, "a zone without offline nodes pages");
    feed(&mut m, &offline("n1", false), 3 * MIN);
    // Still unobserved (its sensors, say): delivered now.
    let released = tick(&mut m, 3 * MIN + 1, &[]);
    assert_eq!(
        summary(&released),
        [(AlertKind::ZoneUnobserved, What::Released, 2, true)]
    );
}

#[test]
fn unacknowledged_urgent_alerts_are_reminded_and_escalated_and_acknowledged_ones_are_not() {
    let mut m = park();
    let urgent = feed(
        &mut m,
        &node(Kind::LampFault, "n1", true, Severity::High),
        0,
    );
    feed(
        &mut m,
        &node(Kind::SensorFault, "n2", true, Severity::Medium),
        0,
    );
    let acked = feed(&mut m, &node(Kind::Tamper, "n3", true, Severity::High), 0);
    m.act(
        &request(&acked[0].alert.id, Action::Acknowledge, "c", ""),
        1,
        &[],
        &mut Vec::new(),
    )
    .unwrap();
    assert!(tick(&mut m, 30 * MIN - 1, &[]).is_empty());
    let reminded = tick(&mut m, 30 * MIN, &[]);
    assert_eq!(
        summary(&reminded),
        [(AlertKind::LampFault, What::Reminded, 2, true)]
    );
    assert!(!reminded[0].escalated);
    let escalated = tick(&mut m, 60 * MIN, &[]);
    assert_eq!(
        summary(&escalated),
        [(AlertKind::LampFault, What::Escalated, 3, true)]
    );
    assert!(escalated[0].escalated);
    let later = feed(
        &mut m,
        &node(Kind::LampFault, "n1", false, Severity::High),
        61 * MIN,
    );
    assert!(later[0].escalated, "escalation receivers hear how it ends");
    assert_eq!(urgent[0].alert.id, later[0].alert.id);
}

fn silence(scope: Scope, from: i64, until: i64) -> Silence {
    Silence {
        id: 1,
        site: "s".into(),
        scope,
        from,
        until,
        by: "crew".into(),
        note: "relamping".into(),
    }
}

#[test]
fn a_silence_pages_nobody_and_delivers_what_is_still_wrong_at_its_end() {
    let mut m = park();
    let window = [silence(Scope::Zone("za".into()), 0, 30 * MIN)];
    let mut out = Vec::new();
    // A node of the zone, and the zone: recorded, not paged. Another zone pages.
    m.condition(
        &node(Kind::LampFault, "n1", true, Severity::High),
        MIN,
        &window,
        &mut out,
    );
    m.condition(
        &zone(Kind::DarkZone, "za", true, Severity::High),
        MIN,
        &window,
        &mut out,
    );
    m.condition(
        &node(Kind::SensorFault, "n2", true, Severity::Medium),
        MIN,
        &window,
        &mut out,
    );
    m.condition(
        &node(Kind::SensorFault, "n2", false, Severity::Medium),
        2 * MIN,
        &window,
        &mut out,
    );
    m.condition(
        &node(Kind::LampFault, "n6", true, Severity::High),
        MIN,
        &window,
        &mut out,
    );
    let paged: Vec<_> = out
        .iter()
        .filter(|c| c.page)
        .map(|c| c.alert.node.clone())
        .collect();
    assert_eq!(paged, [Some("n6".to_owned())]);
    assert!(
        tick(&mut m, 30 * MIN - 1, &window)
            .iter()
            .all(|c| c.alert.node.as_deref() == Some("n6"))
    );
    // At its end: the lamp and the zone, still wrong; not the sensor, fine again.
    let released = tick(&mut m, 30 * MIN, &window);
    let what: Vec<_> = released
        .iter()
        .filter(|c| c.what == What::Released)
        .map(|c| (c.alert.kind, c.page))
        .collect();
    assert_eq!(
        what,
        [(AlertKind::DarkZone, true), (AlertKind::LampFault, true)]
    );
}

#[test]
fn an_alert_paged_before_a_silence_and_resolved_during_it_is_delivered_resolved_at_its_end() {
    let mut m = park();
    let raised = feed(
        &mut m,
        &node(Kind::LampFault, "n1", true, Severity::Medium),
        0,
    );
    assert!(raised[0].page);
    let window = [silence(Scope::Node("n1".into()), MIN, 30 * MIN)];
    let mut out = Vec::new();
    m.condition(
        &node(Kind::LampFault, "n1", false, Severity::Medium),
        2 * MIN,
        &window,
        &mut out,
    );
    assert_eq!(
        summary(&out),
        [(AlertKind::LampFault, What::Resolved, 2, false)]
    );
    // Past the hold time, but receivers saw it open: kept until the silence ends.
    assert!(tick(&mut m, 20 * MIN, &window).is_empty());
    let released = tick(&mut m, 30 * MIN, &window);
    assert_eq!(
        summary(&released),
        [(AlertKind::LampFault, What::Released, 3, true)]
    );
    assert_eq!(released[0].alert.state, AlertState::Resolved);
    tick(&mut m, 41 * MIN, &window);
    assert_eq!(m.alerts().count(), 0, "forgotten after the hold time");
}

#[test]
fn a_circuit_silence_covers_its_power_loss_and_its_nodes() {
    let mut m = park();
    let window = [silence(Scope::Circuit("b".into()), 0, 60 * MIN)];
    let mut out = Vec::new();
    for i in 5..10 {
        m.condition(&offline(&format!("n{i}"), true), 0, &window, &mut out);
    }
    m.tick(MIN, &window, &mut out);
    m.condition(
        &node(Kind::LampFault, "n6", true, Severity::High),
        MIN,
        &window,
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|c| !c.page), "{out:?}");
}

#[test]
fn an_alert_whose_node_left_the_site_files_can_be_resolved_by_hand() {
    let mut m = park();
    let raised = feed(
        &mut m,
        &node(Kind::LampFault, "n1", true, Severity::High),
        0,
    );
    let id = raised[0].alert.id.clone();
    let mut out = Vec::new();
    let refused = m.act(
        &request(&id, Action::Resolve, "c", "pole gone"),
        MIN,
        &[],
        &mut out,
    );
    assert!(refused.unwrap_err().contains("condition is active"));
    // The pole is taken away: nothing will clear its condition now.
    m.topology.nodes.remove("n1");
    m.act(
        &request(&id, Action::Resolve, "c", "pole gone"),
        MIN,
        &[],
        &mut out,
    )
    .unwrap();
    assert_eq!(out[0].alert.state, AlertState::Resolved);
    assert_eq!(out[0].alert.note.as_deref(), Some("pole gone"));
}

#[test]
fn a_condition_back_after_the_hold_time_is_a_new_alert_even_without_a_tick() {
    let mut m = park();
    let lamp = |active| node(Kind::LampFault, "n1", active, Severity::High);
    let first = feed(&mut m, &lamp(true), 0)[0].alert.id.clone();
    feed(&mut m, &lamp(false), MIN);
    let later = feed(&mut m, &lamp(true), 180 * MIN);
    assert_eq!(
        summary(&later),
        [(AlertKind::LampFault, What::Raised, 1, true)]
    );
    assert_ne!(later[0].alert.id, first);
}

#[test]
fn returns_are_counted_over_the_hour_even_past_the_hold_time() {
    let mut m = park();
    let lamp = |active| node(Kind::LampFault, "n1", active, Severity::High);
    let mut changes = Vec::new();
    // On 2 minutes, off 13: each return a new alert, but the fourth time is flapping.
    for i in 0..4 {
        changes.extend(feed(&mut m, &lamp(true), i * 15 * MIN));
        changes.extend(feed(&mut m, &lamp(false), i * 15 * MIN + 2 * MIN));
        changes.extend(tick(&mut m, i * 15 * MIN + 14 * MIN, &[]));
    }
    let flapping: Vec<_> = changes
        .iter()
        .filter(|c| c.what == What::Flapping)
        .collect();
    assert_eq!(flapping.len(), 1, "{changes:#?}");
    assert!(flapping[0].page);
    let after: Vec<(What, bool)> = (changes.iter())
        .skip_while(|c| c.what != What::Flapping)
        .skip(1)
        .map(|c| (c.what, c.page))
        .collect();
    // Quiet when it clears, paged again once it stayed put for the hold time.
    assert_eq!(after, [(What::Resolved, false), (What::Settled, true)]);
}

#[test]
fn a_flapping_alert_still_pages_a_rise_in_severity_and_a_crews_acknowledgement() {
    let mut m = park();
    let dark = |active, severity| zone(Kind::DarkZone, "za", active, severity);
    for i in 0..4 {
        feed(&mut m, &dark(true, Severity::Low), i * 2 * MIN);
        feed(&mut m, &dark(false, Severity::Low), i * 2 * MIN + MIN);
    }
    let back = feed(&mut m, &dark(true, Severity::Low), 8 * MIN);
    assert!(back[0].alert.flapping && !back[0].page);
    let rose = feed(&mut m, &dark(true, Severity::Critical), 9 * MIN);
    assert_eq!(
        summary(&rose),
        [(
            AlertKind::DarkZone,
            What::SeverityRose,
            rose[0].alert.rev,
            true
        )]
    );
    let mut out = Vec::new();
    m.act(
        &request(&rose[0].alert.id, Action::Acknowledge, "c", ""),
        9 * MIN,
        &[],
        &mut out,
    )
    .unwrap();
    assert!(out[0].page);
}

#[test]
fn a_reopened_alert_waits_a_fresh_escalation_delay_and_a_silence_end_restarts_it() {
    let mut m = park();
    let lamp = |active| node(Kind::LampFault, "n1", active, Severity::High);
    feed(&mut m, &lamp(true), 0);
    assert_eq!(tick(&mut m, 60 * MIN, &[])[0].what, What::Escalated);
    feed(&mut m, &lamp(false), 61 * MIN);
    let reopened = feed(&mut m, &lamp(true), 62 * MIN);
    assert!(!reopened[0].escalated, "a fresh delay");
    let mut m = park();
    let window = [silence(Scope::Node("n2".into()), 0, 90 * MIN)];
    let mut out = Vec::new();
    m.condition(
        &node(Kind::Tamper, "n2", true, Severity::High),
        0,
        &window,
        &mut out,
    );
    let released = tick(&mut m, 90 * MIN, &window);
    assert_eq!(
        summary(&released),
        [(AlertKind::Tamper, What::Released, 2, true)]
    );
    assert!(
        tick(&mut m, 90 * MIN + 1_000, &window).is_empty(),
        "not escalated at once"
    );
}

#[test]
fn the_state_survives_a_restart_through_json() {
    let mut m = park();
    feed(&mut m, &zone(Kind::DarkZone, "za", true, Severity::High), 0);
    feed(&mut m, &offline("n1", true), 0);
    for i in 5..10 {
        feed(&mut m, &offline(&format!("n{i}"), true), 0);
    }
    tick(&mut m, 1_000, &[]);
    let json = serde_json::to_string(m.state()).unwrap();
    let state: State = serde_json::from_str(&json).unwrap();
    assert_eq!(&state, m.state());
    let mut resumed = Manager::new(m.topology.clone(), Settings::default(), state);
    assert_eq!(tick(&mut resumed, MIN, &[]), tick(&mut m, MIN, &[]));
}
