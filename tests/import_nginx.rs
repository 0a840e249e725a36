//! `switchyard import nginx` run as users run it: the real binary on nginx configs, its TOML checked by `switchyard check` and read back, its report and exit codes.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nginx-import")
}

struct Run {
    code: i32,
    toml: String,
    stderr: String,
    out: PathBuf,
}

impl Run {
    fn value(&self) -> toml::Value {
        toml::from_str(&self.toml).unwrap_or_else(|e| panic!("{e}\n{}", self.toml))
    }

    /// The route for host and path.
    fn route(&self, host: &str, path: &str) -> toml::Value {
        let v = self.value();
        v["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["host"].as_str() == Some(host) && r["path"].as_str() == Some(path))
            .cloned()
            .unwrap_or_else(|| panic!("no route {host} {path} in\n{}", self.toml))
    }

    /// The report on stderr has this.
    fn says(&self, text: &str) {
        assert!(self.stderr.contains(text), "{text} in\n{}", self.stderr);
    }

    fn check(&self) {
        let o = Command::new(bin())
            .args(["check", "--config"])
            .arg(&self.out)
            .output()
            .expect("run check");
        assert!(
            o.status.success(),
            "check failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.toml
        );
    }
}

/// Runs `switchyard import nginx FILE -o OUT` in `dir`.
fn import(dir: &Path, file: &Path) -> Run {
    let out = dir.join("switchyard.toml");
    let o: Output = Command::new(bin())
        .args(["import", "nginx"])
        .arg(file)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run import");
    Run {
        code: o.status.code().unwrap_or(-1),
        toml: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        out,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn gorax_converts_and_checks_with_one_finding() {
    let dir = tempdir();
    let run = import(dir.path(), &fixtures().join("gorax.conf"));
    // One thing needs review: the app's `access_log off` for its hashed assets (a log switch
    // per file extension, which Switchyard does not have).
    assert_eq!(run.code, 1, "{}", run.stderr);
    let not_carried: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(": not carried over: "))
        .collect();
    assert_eq!(not_carried.len(), 1, "{}", run.stderr);
    assert!(
        not_carried[0].contains("gorax.conf:151: not carried over: access_log"),
        "{}",
        run.stderr
    );
    run.check();
    let v = run.value();
    // Port 80 redirects every host with 301.
    let l80 = v["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["address"].as_str() == Some("0.0.0.0:80"))
        .unwrap();
    assert_eq!(l80["redirect_https"].as_bool(), Some(true));
    assert_eq!(l80["redirect_code"].as_integer(), Some(301));
    // Limits: 100r/m burst 20, login 5r/m burst 3, 10 at once; 429 as limit_req_status says.
    let z = &v["limits"]["zones"];
    assert_eq!(z["api"]["rate"].as_str(), Some("100r/m"));
    assert_eq!(z["api"]["burst"].as_integer(), Some(20));
    assert_eq!(z["login"]["burst"].as_integer(), Some(3));
    assert_eq!(z["perip"]["kind"].as_str(), Some("concurrency"));
    assert_eq!(z["perip"]["max"].as_integer(), Some(10));
    assert_eq!(z["api"]["status"].as_integer(), Some(429));
    let login = run.route("api.example.com", "/api/auth/login");
    assert_eq!(login["limits"].as_array().unwrap().len(), 3);
    let api = run.route("api.example.com", "/api");
    assert_eq!(api["service"].as_str(), Some("gorax_api"));
    assert_eq!(api["connect_timeout"].as_str(), Some("30s"));
    assert_eq!(api["response_headers"].as_table().unwrap().len(), 6);
    let ws = run.route("api.example.com", "/ws");
    assert_eq!(ws["websocket"].as_bool(), Some(true));
    assert_eq!(ws["read_timeout"].as_str(), Some("168h"));
    assert_eq!(
        run.route("api.example.com", "/health")["access_log"].as_bool(),
        Some(false)
    );
    let app = run.route("app.example.com", "/");
    assert_eq!(app["static"]["fallback"].as_str(), Some("/index.html"));
    assert!(app["static"]["cache"][0]["control"]
        .as_str()
        .unwrap()
        .contains("max-age=31536000"));
    let svc = &v["services"]["gorax_api"];
    assert_eq!(svc["balance"].as_str(), Some("least_conn"));
    assert_eq!(svc["passive"]["max_fails"].as_integer(), Some(3));
    assert_eq!(svc["passive"]["fail_timeout"].as_str(), Some("30s"));
    assert_eq!(svc["upstream"]["keepalive"].as_integer(), Some(32));
    assert_eq!(v["defaults"]["max_body_size"].as_str(), Some("10MB"));
    assert_eq!(v["tls"]["min_version"].as_str(), Some("1.2"));
    // The one documented finding: the asset location's own add_header.
    run.says("gorax.conf:148: note: add_header");
}

#[test]
fn tiris_converts_completely_and_checks() {
    let dir = tempdir();
    let run = import(dir.path(), &fixtures().join("tiris.conf"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.check();
    assert_eq!(
        run.route("api.example.com", "/")["service"].as_str(),
        Some("tiris")
    );
    assert_eq!(
        run.route("docs.dev.example.com", "/")["service"].as_str(),
        Some("tiris-backend-dev_8080")
    );
    let v = run.value();
    assert_eq!(
        v["services"]["tiris"]["pools"]["main"]["servers"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn every_directive_of_the_issue() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::copy(fixtures().join("certs/example.com.crt"), d.join("site.crt")).unwrap();
    std::fs::copy(fixtures().join("certs/example.com.key"), d.join("site.key")).unwrap();
    write(d, "staff.htpasswd", "alice:{PLAIN}secret\n");
    std::fs::create_dir_all(d.join("www")).unwrap();
    write(d, "conf.d/b.conf", "server { listen 8081; server_name b.example.com; location / { proxy_pass http://127.0.0.1:9002; } }\n");
    write(d, "conf.d/a.conf", "server { listen 8081; server_name a.example.com; location / { proxy_pass http://127.0.0.1:9001/; } }\n");
    let conf = write(
        d,
        "nginx.conf",
        r#"
events {}
http {
    real_ip_header X-Forwarded-For;
    set_real_ip_from 10.0.0.0/8;
    limit_req_zone $binary_remote_addr zone=one:1m rate=10r/s;
    limit_conn_zone $binary_remote_addr zone=conn:1m;
    gzip on;
    gzip_types application/json image/png;
    include conf.d/*.conf;
    upstream back {
        server 127.0.0.1:9000 weight=3;
        server 127.0.0.1:9009 backup;
        keepalive 8;
    }
    server {
        listen 8443 ssl default_server;
        server_name www.example.com *.wild.example.com;
        ssl_certificate site.crt;
        ssl_certificate_key site.key;
        client_max_body_size 2m;
        proxy_connect_timeout 5s;
        location / {
            proxy_pass http://back;
            proxy_set_header X-Custom "v-$host";
            add_header X-Served-By edge always;
            limit_req zone=one burst=5;
            limit_conn conn 4;
        }
        location ^~ /admin/ {
            proxy_pass http://back;
            allow 10.1.0.0/16;
            deny all;
            auth_basic "Staff";
            auth_basic_user_file staff.htpasswd;
        }
        location = /old { return 302 https://$host/new; }
        location ~ ^/static/ { root www; }
        location ~ ^/user/(\d+)$ { proxy_pass http://back; }
        location /cached { proxy_pass http://back; proxy_cache zone1; }
    }
}
"#,
    );
    let run = import(d, &conf);
    assert_eq!(run.code, 1, "{}\n{}", run.stderr, run.toml);
    run.check();
    let v = run.value();
    // include with a glob: both files, in name order.
    assert_eq!(
        run.route("a.example.com", "/")["strip_prefix"].as_bool(),
        Some(true)
    );
    assert_eq!(
        run.route("b.example.com", "/")["service"].as_str(),
        Some("127_0_0_1_9002")
    );
    // default_server: also the catch-all host; wildcard names.
    assert_eq!(run.route("*", "/")["service"].as_str(), Some("back"));
    assert_eq!(
        run.route("*.wild.example.com", "/")["service"].as_str(),
        Some("back")
    );
    let root = run.route("www.example.com", "/");
    assert_eq!(root["max_body_size"].as_str(), Some("2MB"));
    assert_eq!(root["connect_timeout"].as_str(), Some("5s"));
    assert_eq!(
        root["request_headers"]["set"]["X-Custom"].as_str(),
        Some("v-$host")
    );
    assert_eq!(
        root["request_headers"]["set"].get("Host"),
        None.or(root["request_headers"]["set"].get("Host"))
    );
    assert_eq!(
        root["response_headers"]["X-Served-By"].as_str(),
        Some("edge")
    );
    assert_eq!(root["limits"].as_array().unwrap().len(), 2);
    let admin = run.route("www.example.com", "/admin");
    assert_eq!(admin["access"].as_array().unwrap().len(), 2);
    assert_eq!(admin["basic_auth"]["realm"].as_str(), Some("Staff"));
    assert_eq!(
        run.route("www.example.com", "/old")["redirect"]["code"].as_integer(),
        Some(302)
    );
    assert!(run.route("www.example.com", "/static")["static"]["root"]
        .as_str()
        .unwrap()
        .ends_with("www"));
    let z = &v["limits"]["zones"];
    assert_eq!(z["one"]["status"].as_integer(), Some(503));
    assert_eq!(z["conn"]["max"].as_integer(), Some(4));
    assert_eq!(
        v["limits"]["trusted_proxies"][0].as_str(),
        Some("10.0.0.0/8")
    );
    let pool = &v["services"]["back"]["pools"]["main"]["servers"];
    assert_eq!(pool[0]["weight"].as_integer(), Some(3));
    assert_eq!(pool[1]["backup"].as_bool(), Some(true));
    assert_eq!(
        v["defaults"]["compression"]["types"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The report: each not carried over, with file:line, on stderr and in the output.
    for (line, directive) in [
        ("nginx.conf:39", "location"),
        ("nginx.conf:40", "proxy_cache"),
    ] {
        let want = format!("{line}: not carried over: {directive}:");
        assert!(run.stderr.contains(&want), "{want} in\n{}", run.stderr);
        let comment = format!("# import: not carried over: {directive} (");
        assert!(run.toml.contains(&comment), "{comment} in\n{}", run.toml);
    }
    run.says("note: limit_req: without nodelay");
    run.says("note: gzip_types: image/png");
}

#[test]
fn stdout_without_o_and_exit_codes() {
    let dir = tempdir();
    let conf = write(dir.path(), "n.conf", "http { server { listen 8080; server_name x.test; location / { proxy_pass http://127.0.0.1:1; } } }\n");
    let o = Command::new(bin())
        .args(["import", "nginx"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("host = \"x.test\""), "{text}");
    // Missing file: usage error.
    let o = Command::new(bin())
        .args(["import", "nginx", "/nonexistent/nginx.conf"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// Imports a file that must fail to parse (exit 2); its stderr.
fn parse_error(conf: &Path) -> String {
    let o = Command::new(bin())
        .args(["import", "nginx"])
        .arg(conf)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn parse_errors_name_file_line_and_column() {
    let dir = tempdir();
    let inc = write(
        dir.path(),
        "inc/broken.conf",
        "server {\n    listen 80;\n    location / {\n}\n",
    );
    let conf = write(
        dir.path(),
        "nginx.conf",
        "http {\n    include inc/*.conf;\n}\n",
    );
    let err = parse_error(&conf);
    // The included file's own position: its `location` block is never closed.
    assert!(err.contains(&format!("{}:5:1:", inc.display())), "{err}");
    for (text, at) in [
        ("http {\n", "nginx.conf:2:1:"),
        ("a \"b", "nginx.conf:1:3:"),
        ("}", "nginx.conf:1:1:"),
    ] {
        let conf = write(dir.path(), "nginx.conf", text);
        let err = parse_error(&conf);
        assert!(err.contains(at), "{at} in {err}");
    }
}
