//! The store's schema, as numbered migrations. `PRAGMA user_version` says how many ran.

/// Each migration, in order; never edit one that shipped, add the next.
pub const MIGRATIONS: &[&str] = &[
    // 1: reports, node status, events, dead letters, acknowledgement state, cursors.
    "
    CREATE TABLE nodes (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        site TEXT,
        zone TEXT
    );
    -- One row per report; id is arrival order (the forwarder's cursor).
    CREATE TABLE reports (
        id INTEGER PRIMARY KEY,
        node INTEGER NOT NULL REFERENCES nodes(id),
        boot INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        clock_ok INTEGER NOT NULL,
        received INTEGER NOT NULL,
        period_s INTEGER NOT NULL,
        lux_avg REAL,
        lux_min REAL,
        lux_max REAL,
        motion INTEGER NOT NULL,
        lamp_on INTEGER NOT NULL,
        lamp_level INTEGER NOT NULL,
        power_w REAL,
        cfg INTEGER,
        faults INTEGER NOT NULL,
        temp_c REAL,
        zone TEXT,
        UNIQUE (node, boot, seq)
    );
    CREATE INDEX reports_by_time ON reports (node, ts);
    CREATE TABLE statuses (
        id INTEGER PRIMARY KEY,
        node INTEGER NOT NULL REFERENCES nodes(id),
        received INTEGER NOT NULL,
        online INTEGER NOT NULL,
        reason TEXT,
        boot INTEGER NOT NULL,
        conn INTEGER NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE INDEX statuses_by_node ON statuses (node, id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        node INTEGER NOT NULL REFERENCES nodes(id),
        boot INTEGER NOT NULL,
        eseq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        received INTEGER NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        UNIQUE (node, boot, eseq)
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        received INTEGER NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        reason TEXT NOT NULL,
        field TEXT,
        node TEXT,
        boot INTEGER,
        seq INTEGER
    );
    CREATE INDEX dead_letters_by_report ON dead_letters (node, boot, seq);
    -- Per node and boot: counting starts at from_seq; every report up to acked is handled.
    CREATE TABLE ack_state (
        node INTEGER NOT NULL REFERENCES nodes(id),
        boot INTEGER NOT NULL,
        from_seq INTEGER NOT NULL,
        acked INTEGER,
        lost INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (node, boot)
    ) WITHOUT ROWID;
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 2: closed hours of one node (and zone) as compressed column blocks. max_id is the
    // highest report id folded in: raw rows above it came later and count on top.
    "
    CREATE TABLE hour_blocks (
        node INTEGER NOT NULL REFERENCES nodes(id),
        hour INTEGER NOT NULL,
        zone TEXT NOT NULL DEFAULT '',
        count INTEGER NOT NULL,
        max_id INTEGER NOT NULL,
        columns BLOB NOT NULL,
        PRIMARY KEY (node, hour, zone)
    ) WITHOUT ROWID;
    ",
    // 3: raw reports are read in arrival order from the compaction cursor on (every id up
    // to it is in a block), so they need no time index, which cost more than half of
    // ingest; zone series find their blocks by zone.
    "
    DROP INDEX reports_by_time;
    CREATE INDEX hour_blocks_by_zone ON hour_blocks (zone, hour);
    ",
    // 4: what the gateway knows per node's boot (acknowledgement progress, the highest
    // seq handled, the clock that places its reports), the exact seqs declared lost, the
    // raw uptime of reports the gateway had to stamp and whether they wait for their
    // boot's clock, retained statuses, and the subscriptions the broker holds for the
    // gateway's session.
    "
    ALTER TABLE ack_state RENAME TO boots;
    ALTER TABLE boots ADD COLUMN top INTEGER;
    -- The boot's first report with a valid clock: it places the boot's stamped reports.
    ALTER TABLE boots ADD COLUMN fix_seq INTEGER;
    ALTER TABLE boots ADD COLUMN fix_ts INTEGER;
    ALTER TABLE boots ADD COLUMN fix_up_ms INTEGER;
    -- While no valid clock is known: the reports with the highest up_ms and seq so far.
    ALTER TABLE boots ADD COLUMN ref_up_ms INTEGER;
    ALTER TABLE boots ADD COLUMN ref_up_received INTEGER;
    ALTER TABLE boots ADD COLUMN ref_seq INTEGER;
    ALTER TABLE boots ADD COLUMN ref_seq_received INTEGER;
    UPDATE boots SET top = (SELECT max(v) FROM (SELECT boots.acked AS v UNION ALL
        SELECT max(r.seq) FROM reports r WHERE r.node = boots.node AND r.boot = boots.boot));
    CREATE TABLE lost_reports (
        node INTEGER NOT NULL REFERENCES nodes(id),
        boot INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (node, boot, first_seq)
    ) WITHOUT ROWID;
    ALTER TABLE reports ADD COLUMN up_ms INTEGER;
    -- 1 while a stamped report waits for its boot's clock: compaction and the forwarder
    -- leave it (the writer places it again, or lets it go after a while, and clears it).
    ALTER TABLE reports ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX reports_held ON reports (node, boot) WHERE held = 1;
    -- Reports the forwarder passed while they were held; it sends them once let go.
    CREATE TABLE forward_later (
        id INTEGER PRIMARY KEY
    );
    ALTER TABLE statuses ADD COLUMN retained INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE subscriptions (
        filter TEXT PRIMARY KEY
    ) WITHOUT ROWID;
    ",
    // 5: detection. Facts other than reports (statuses, fault events, the release of held
    // reports, configs published, liveness decisions), each placed after the highest report id at its insert
    // so the detectors read reports and facts in commit order; condition transitions;
    // zone windows; the detectors' state and how far they have read.
    "
    -- AUTOINCREMENT: an id is never used twice, also once retention emptied the table.
    CREATE TABLE facts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        after_report INTEGER NOT NULL,
        node INTEGER NOT NULL REFERENCES nodes(id),
        kind TEXT NOT NULL,
        boot INTEGER,
        conn INTEGER,
        raised INTEGER,
        received INTEGER NOT NULL,
        cfg INTEGER,
        payload TEXT,
        interval_s INTEGER
    );
    -- The fact that let a held report go: it is judged there, not at its own place.
    ALTER TABLE reports ADD COLUMN released INTEGER;
    CREATE INDEX reports_released ON reports (released) WHERE released IS NOT NULL;
    CREATE TABLE conditions (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        site TEXT NOT NULL,
        zone TEXT,
        node TEXT,
        active INTEGER NOT NULL,
        severity TEXT NOT NULL,
        since INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        detail TEXT NOT NULL,
        recorded INTEGER NOT NULL
    );
    CREATE INDEX conditions_by_time ON conditions (ts);
    CREATE TABLE zone_windows (
        site TEXT NOT NULL,
        zone TEXT NOT NULL,
        end_ms INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,
        status INTEGER NOT NULL,
        lux_avg REAL,
        lux_min REAL,
        required_avg REAL NOT NULL,
        required_min REAL NOT NULL,
        detections INTEGER NOT NULL,
        occupied_dark_minutes INTEGER NOT NULL,
        detections_dark INTEGER NOT NULL,
        valid_nodes INTEGER NOT NULL,
        nodes INTEGER NOT NULL,
        cause TEXT,
        revised INTEGER NOT NULL,
        PRIMARY KEY (site, zone, end_ms)
    ) WITHOUT ROWID;
    -- Every config version published to a node: what (content, without id and version,
    -- to compare) and the message itself.
    CREATE TABLE configs (
        node INTEGER NOT NULL REFERENCES nodes(id),
        cfg INTEGER NOT NULL,
        content TEXT NOT NULL,
        payload TEXT NOT NULL,
        published INTEGER NOT NULL,
        PRIMARY KEY (node, cfg)
    ) WITHOUT ROWID;
    CREATE TABLE detector_snapshots (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        report INTEGER NOT NULL,
        fact INTEGER NOT NULL,
        state TEXT NOT NULL
    );
    ",
    "
    -- Each alert's latest revision (the message itself is in its history).
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        rev INTEGER NOT NULL,
        kind TEXT NOT NULL,
        site TEXT NOT NULL,
        state TEXT NOT NULL,
        severity TEXT NOT NULL,
        since INTEGER NOT NULL,
        ts INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX alerts_by_state ON alerts (state, ts);
    -- Every revision, as the PROTOCOL.md message, and what happened.
    CREATE TABLE alert_history (
        id TEXT NOT NULL,
        rev INTEGER NOT NULL,
        what TEXT NOT NULL,
        paged INTEGER NOT NULL,
        message TEXT NOT NULL,
        recorded INTEGER NOT NULL,
        PRIMARY KEY (id, rev)
    ) WITHOUT ROWID;
    -- Every change in order, each reader through its own cursor: receivers take those
    -- paged, InfluxDB all of them.
    CREATE TABLE alert_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        rev INTEGER NOT NULL,
        paged INTEGER NOT NULL,
        escalated INTEGER NOT NULL
    );
    -- Zone windows in the order they were stored (again when revised), for InfluxDB.
    CREATE TABLE window_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        site TEXT NOT NULL,
        zone TEXT NOT NULL,
        end_ms INTEGER NOT NULL
    );
    CREATE TABLE alert_manager (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        conditions INTEGER NOT NULL,
        state TEXT NOT NULL
    );
    -- Crews' actions, answered by the manager.
    CREATE TABLE alert_requests (
        id INTEGER PRIMARY KEY,
        alert TEXT NOT NULL,
        action TEXT NOT NULL,
        by TEXT NOT NULL,
        note TEXT NOT NULL,
        requested INTEGER NOT NULL,
        answered INTEGER,
        refusal TEXT
    );
    CREATE INDEX alert_requests_open ON alert_requests (id) WHERE answered IS NULL;
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL,
        scope TEXT NOT NULL,
        from_ms INTEGER NOT NULL,
        until_ms INTEGER NOT NULL,
        by TEXT NOT NULL,
        note TEXT NOT NULL
    );
    -- Changes a receiver refused for good (a 4xx other than 408/429).
    CREATE TABLE alert_refusals (
        receiver TEXT NOT NULL,
        id TEXT NOT NULL,
        rev INTEGER NOT NULL,
        reason TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (receiver, id, rev)
    ) WITHOUT ROWID;
    ",
    "
    -- API tokens: only a hash of each is kept; revoked ones stay, so a name is never reused.
    CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL,
        revoked INTEGER
    ) WITHOUT ROWID;
    ",
    "
    -- Lighting set through the API for a zone or a node (target 'zone:ID' or 'node:ID'):
    -- it wins over the site file's until reset. lighting: {profile, motion_boost}.
    CREATE TABLE control_lighting (
        site TEXT NOT NULL,
        target TEXT NOT NULL,
        lighting TEXT NOT NULL,
        set_by TEXT NOT NULL,
        set_at INTEGER NOT NULL,
        PRIMARY KEY (site, target)
    ) WITHOUT ROWID;
    -- Every control action: who, what, when; sent: [[node, message id], ...] to match
    -- each node's command_applied or command_rejected.
    CREATE TABLE control_audit (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        by TEXT NOT NULL,
        action TEXT NOT NULL,
        site TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        sent TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX control_audit_by_site ON control_audit (site, id);
    ",
    "
    -- The store's own secrets, e.g. the key of partners' rounding: made once, kept.
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;
    ",
    "
    -- Zone windows' foot traffic summed per quarter hour of their ends (quarter =
    -- (end_ms - 1) / 900000), kept by triggers as windows are written or revised: the
    -- usage heat map reads a year in these instead of every window. after_dark counts
    -- the detections of judged windows (status 0 is not judged).
    CREATE TABLE zone_quarters (
        site TEXT NOT NULL,
        zone TEXT NOT NULL,
        quarter INTEGER NOT NULL,
        detections INTEGER NOT NULL,
        after_dark INTEGER NOT NULL,
        occupied_dark_minutes INTEGER NOT NULL,
        detections_dark INTEGER NOT NULL,
        PRIMARY KEY (site, zone, quarter)
    ) WITHOUT ROWID;
    INSERT INTO zone_quarters
        SELECT site, zone, (end_ms - 1) / 900000, SUM(detections),
            SUM(CASE WHEN status != 0 THEN detections ELSE 0 END),
            SUM(occupied_dark_minutes), SUM(detections_dark)
        FROM zone_windows GROUP BY 1, 2, 3;
    -- A window written again (revised) first takes its old figures out.
    CREATE TRIGGER zone_quarters_take_out BEFORE INSERT ON zone_windows
    WHEN EXISTS (SELECT 1 FROM zone_windows
        WHERE site = NEW.site AND zone = NEW.zone AND end_ms = NEW.end_ms)
    BEGIN
        UPDATE zone_quarters SET
            detections = zone_quarters.detections - was.detections,
            after_dark = zone_quarters.after_dark
                - CASE WHEN was.status != 0 THEN was.detections ELSE 0 END,
            occupied_dark_minutes = zone_quarters.occupied_dark_minutes
                - was.occupied_dark_minutes,
            detections_dark = zone_quarters.detections_dark - was.detections_dark
        FROM (SELECT status, detections, occupied_dark_minutes, detections_dark
            FROM zone_windows
            WHERE site = NEW.site AND zone = NEW.zone AND end_ms = NEW.end_ms) AS was
        WHERE zone_quarters.site = NEW.site AND zone_quarters.zone = NEW.zone
            AND quarter = (NEW.end_ms - 1) / 900000;
    END;
    CREATE TRIGGER zone_quarters_put_in AFTER INSERT ON zone_windows
    BEGIN
        INSERT INTO zone_quarters (site, zone, quarter, detections, after_dark,
            occupied_dark_minutes, detections_dark)
        VALUES (NEW.site, NEW.zone, (NEW.end_ms - 1) / 900000, NEW.detections,
            CASE WHEN NEW.status != 0 THEN NEW.detections ELSE 0 END,
            NEW.occupied_dark_minutes, NEW.detections_dark)
        ON CONFLICT (site, zone, quarter) DO UPDATE SET
            detections = detections + excluded.detections,
            after_dark = after_dark + excluded.after_dark,
            occupied_dark_minutes = occupied_dark_minutes + excluded.occupied_dark_minutes,
            detections_dark = detections_dark + excluded.detections_dark;
    END;
    ",
];
