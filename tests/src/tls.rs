//! Certificates for TLS listeners under test, made with the `openssl` command.

use std::path::Path;
use std::process::Command;

use crate::require;

/// Makes, in `dir`, a certificate authority of the test's own (`ca.pem`, `ca.key`) and a
/// server certificate for 127.0.0.1 signed by it (`server.pem`, `server.key`).
pub fn certificates(dir: &Path) {
    let openssl = require("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &[
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=parklight test CA",
        ],
        &ec[..],
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[
        &["req", "-subj", "/CN=127.0.0.1"],
        &ec[..],
        &["-keyout", "server.key", "-out", "server.csr"],
    ]
    .concat());
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("writing san.ext");
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}
