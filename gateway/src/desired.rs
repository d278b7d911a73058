//! Desired configuration (DESIGN.md "Desired state, reported state"): each node's config
//! comes from its site file (profile, interval, motion boost, location with the site's
//! POSIX TZ) and is published retained on its `config` topic when it differs from the
//! last version published. Every published version is kept in the store, so a restart
//! never goes back, and the detectors learn from it what each version asks of a zone.
//!
//! Lighting set through the API for a node, else for its zone, wins over the site file's
//! until it is reset (DESIGN.md "Detection and alerts": the detectors judge each zone by
//! the config its nodes were sent, whoever set it).
//!
//! Site files are read again when they change on disk; a file that no longer checks is
//! logged and the last good one stays in force.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use parklight_protocol::config::{MotionBoost, Profile};
use parklight_protocol::topic::{NodeTopic, node_topic};
use parklight_protocol::{Config, DecodeError, Message, Reject};
use parklight_site::{Desired, NodePlacement, Site};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::control::{ControlLighting, Target};
use crate::store::{StorageError, Store};

/// What the publisher needs.
#[derive(Debug, Clone)]
pub struct DesiredSettings {
    /// The store's folder.
    pub store: PathBuf,
    /// Dead letters kept (for opening the store).
    pub dead_letters_max: usize,
    /// Topic prefix.
    pub prefix: String,
    /// The site files, in the order of the sites.
    pub files: Vec<PathBuf>,
    /// How often the site files are looked at for changes.
    pub check_every: Duration,
}

/// A config message to publish retained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The node's `config` topic.
    pub topic: String,
    /// The message.
    pub payload: String,
}

/// A change of lighting set through the API, logged as control audit entry `entry`.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its audit entry.
    pub entry: i64,
    /// The site.
    pub site: String,
    /// The zone or node whose lighting changed.
    pub target: Target,
}

/// A message sent to a node: the node and the message's id.
pub type Sent = (String, String);

/// What the API asks of the publisher.
#[derive(Debug)]
pub enum Request {
    /// Plan again now for a change of lighting: the configs it makes for the nodes the
    /// change governs are recorded in its audit entry, and answered once handed to the
    /// broker connection. A plan that fails is tried again; the entry is recorded then.
    Replan(Change, oneshot::Sender<Vec<Sent>>),
    /// Publish these commands (QoS 1, not retained); answered once handed over.
    Commands(Vec<Publication>, oneshot::Sender<()>),
}

/// The nodes of `site` whose lighting a change of `target` decides, given what is set
/// through the API: the node itself, or its zone's nodes without lighting of their own.
pub fn governed<'s>(
    site: &'s Site,
    target: &'s Target,
    controls: &'s [ControlLighting],
) -> impl Iterator<Item = &'s NodePlacement> {
    site.nodes.iter().filter(move |node| match target {
        Target::Node(id) => node.id == *id,
        Target::Zone(zone) => {
            node.zone.as_deref() == Some(zone.as_str())
                && !(controls.iter())
                    .any(|c| c.site == site.id && c.target == Target::Node(node.id.clone()))
        }
    })
}

/// Reads lighting as stored for a zone or node (`{"profile": [...], "motion_boost":
/// {...}}`), exactly as a node would read it in a config.
pub fn decode_lighting(text: &str) -> Result<(Profile, Option<MotionBoost>), DecodeError> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).unwrap_or_default();
    object.insert("v".into(), 1.into());
    object.insert("id".into(), "check".into());
    object.insert("cfg".into(), 1.into());
    let config = Config::decode(serde_json::Value::Object(object).to_string().as_bytes())?;
    let profile = config.profile.ok_or(DecodeError {
        reason: Reject::MissingField,
        field: Some("profile"),
    })?;
    Ok((profile, config.motion_boost))
}

/// What `node` of `site` should run: the lighting set through the API for it, else for
/// its zone, else the site file's.
pub fn desired(site: &Site, node: &NodePlacement, controls: &[ControlLighting]) -> Desired {
    let mut desired = site.desired(node);
    let set = |target: Target| {
        controls
            .iter()
            .find(|c| c.site == site.id && c.target == target)
    };
    let control = set(Target::Node(node.id.clone()))
        .or_else(|| node.zone.clone().and_then(|zone| set(Target::Zone(zone))));
    if let Some(control) = control {
        match decode_lighting(&control.lighting) {
            Ok((profile, motion_boost)) => {
                desired.profile = profile;
                desired.motion_boost = motion_boost;
            }
            Err(error) => tracing::error!(
                node = %node.id,
                %error,
                "the lighting set for it does not decode: the site file's stays"
            ),
        }
    }
    desired
}

/// A config message as text.
fn encode(config: &parklight_protocol::Config) -> String {
    let mut buf = [0u8; 2048];
    // A config of at most eight steps and a 64-byte time zone fits in far less.
    let len = config.encode(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// The lowest version a new config gets at `now` (Unix ms): seconds since 2020, so that a
/// store started afresh never numbers a config as one a node already runs with other
/// content (a node ignores a config of the version it runs).
fn first_version(now: i64) -> u32 {
    u32::try_from((now - 1_577_836_800_000).max(0) / 1000).unwrap_or(u32::MAX)
}

/// Stores a new version for each node of `sites` whose desired config differs from the
/// last one published (or that has none), numbered past that one, the version the node
/// last reported running, and [`first_version`]; returns what to publish, with the
/// unchanged latest versions too when `republish` (at start: a broker may have lost its
/// retained messages, or the gateway stopped between storing and publishing), and the
/// versions it made, by node.
pub fn plan(
    store: &mut Store,
    sites: &[Site],
    prefix: &str,
    now: i64,
    republish: bool,
) -> Result<(Vec<Publication>, HashMap<String, u32>), StorageError> {
    let latest = store.latest_configs()?;
    let controls = store.control_lighting()?;
    let running: HashMap<String, u32> = store
        .node_summaries()?
        .into_iter()
        .filter_map(|n| Some((n.node, n.cfg?)))
        .collect();
    let mut writer = store.write()?;
    let mut publications = Vec::new();
    let mut made = HashMap::new();
    for site in sites {
        for node in &site.nodes {
            let desired = desired(site, node, &controls);
            let content = encode(&desired.config(0));
            let last = latest.get(&node.id);
            let Ok(topic) = node_topic(prefix, &site.id, &node.id, NodeTopic::Config) else {
                continue; // ids are checked with the site file: a topic always fits
            };
            if let Some((_, published, payload)) = last
                && *published == content
            {
                if republish {
                    publications.push(Publication {
                        topic: topic.as_str().to_owned(),
                        payload: payload.clone(),
                    });
                }
                continue;
            }
            let newest = last.map_or(0, |(cfg, _, _)| *cfg);
            let cfg = (newest.max(running.get(&node.id).copied().unwrap_or(0)) + 1)
                .max(first_version(now));
            let payload = encode(&desired.config(cfg));
            let id = writer.node(&node.id, &site.id)?;
            writer.config(id, cfg, &content, &payload, now)?;
            made.insert(node.id.clone(), cfg);
            publications.push(Publication {
                topic: topic.as_str().to_owned(),
                payload,
            });
        }
    }
    writer.commit()?;
    Ok((publications, made))
}

/// Plans, then records in each change's audit entry the configs made for the nodes it
/// governs; what to publish, and what each change sent.
fn plan_changes(
    store: &mut Store,
    sites: &[Site],
    prefix: &str,
    republish: bool,
    changes: &[Change],
) -> Result<(Vec<Publication>, Vec<Vec<Sent>>), StorageError> {
    let now = jiff::Timestamp::now().as_millisecond();
    let (publications, made) = plan(store, sites, prefix, now, republish)?;
    let controls = store.control_lighting()?;
    let mut sent = Vec::new();
    for change in changes {
        let site = sites.iter().find(|s| s.id == change.site);
        let nodes = site
            .into_iter()
            .flat_map(|site| governed(site, &change.target, &controls));
        let messages: Vec<Sent> = nodes
            .filter_map(|node| Some((node.id.clone(), format!("c-{}", made.get(&node.id)?))))
            .collect();
        store.control_sent(change.entry, &messages)?;
        sent.push(messages);
    }
    Ok((publications, sent))
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Publishes what [`plan`] finds at start, then again whenever a site file changes or
/// the API asks (`requests`), until `stop`.
pub async fn run(
    settings: DesiredSettings,
    mut sites: Vec<Site>,
    client: AsyncClient,
    mut requests: mpsc::Receiver<Request>,
    stop: CancellationToken,
) -> Result<(), StorageError> {
    let mut seen: Vec<Option<SystemTime>> = settings.files.iter().map(modified).collect();
    let mut republish = true;
    let mut waiting: Vec<(Change, oneshot::Sender<Vec<Sent>>)> = Vec::new();
    loop {
        let (store_path, max, prefix) = (
            settings.store.clone(),
            settings.dead_letters_max,
            settings.prefix.clone(),
        );
        let current = sites.clone();
        let changes: Vec<Change> = waiting.iter().map(|(change, _)| change.clone()).collect();
        let planned = tokio::task::spawn_blocking(move || {
            let mut store = Store::open(&store_path, max)?;
            plan_changes(&mut store, &current, &prefix, republish, &changes)
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("config planning panicked: {e}")))?;
        let mut retry = false;
        match planned {
            Ok((publications, sent)) => {
                republish = false;
                for publication in publications {
                    tracing::info!(topic = %publication.topic, "publishing config");
                    if client
                        .publish(
                            publication.topic,
                            QoS::AtLeastOnce,
                            true,
                            publication.payload,
                        )
                        .await
                        .is_err()
                    {
                        return Ok(()); // the connection's task has ended: the gateway stops
                    }
                }
                for ((_, reply), sent) in waiting.drain(..).zip(sent) {
                    let _ = reply.send(sent);
                }
            }
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "configs not planned; retrying");
                retry = true;
            }
            Err(error) => return Err(error),
        }
        // Wait for a site file to change (a good one replaces its site) or a request.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(settings.check_every) => if retry { break },
                Some(request) = requests.recv() => match request {
                    Request::Replan(change, reply) => {
                        waiting.push((change, reply));
                        break;
                    }
                    Request::Commands(commands, reply) => {
                        for command in commands {
                            tracing::info!(topic = %command.topic, "publishing command");
                            if client
                                .publish(command.topic, QoS::AtLeastOnce, false, command.payload)
                                .await
                                .is_err()
                            {
                                return Ok(());
                            }
                        }
                        let _ = reply.send(());
                        continue;
                    }
                },
                _ = stop.cancelled() => return Ok(()),
            }
            let mut changed = false;
            for (i, file) in settings.files.iter().enumerate() {
                let now = modified(file);
                if now == seen[i] {
                    continue;
                }
                seen[i] = now;
                match Site::check_file(file) {
                    Ok(checked) if checked.site.id == sites[i].id => {
                        tracing::info!(file = %file.display(), "site file changed: configs follow now; zones, classes and nodes at the next start");
                        sites[i] = checked.site;
                        changed = true;
                    }
                    Ok(checked) => tracing::error!(
                        file = %file.display(),
                        "site file now names site {}, not {}: kept the last good one",
                        checked.site.id,
                        sites[i].id
                    ),
                    Err(error) => {
                        tracing::error!(file = %file.display(), %error, "site file changed but does not check: kept the last good one")
                    }
                }
            }
            if changed {
                break;
            }
        }
    }
}
