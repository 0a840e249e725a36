//! The dashboard page in a real browser (headless Chromium): sign-in through its form, pools and weights from the API, and a bad canary's rollback in the rollout panel and the traffic chart.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::*;

const TOKEN: &str = "dash-t0ken";
/// Generous: two busy cores, a debug build and a browser.
const LONG: Duration = Duration::from_secs(90);

/// `switchyard demo` as a child process, stopped by PID when dropped.
struct DemoProcess {
    child: Child,
    admin: u16,
}

impl DemoProcess {
    fn start(dir: &Path, token: &str, extra: &[&str]) -> DemoProcess {
        let (http, admin) = (port(), port());
        let mut cmd = bin!().command();
        cmd.arg("demo")
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("SWITCHYARD_TOKEN", token);
        let demo = DemoProcess {
            child: cmd.spawn().unwrap(),
            admin,
        };
        let up = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
        });
        assert!(up, "the demo's admin API did not start listening");
        demo
    }

    fn page(&self) -> String {
        format!("http://127.0.0.1:{}/", self.admin)
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if !wait_until(Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten().is_some()
        }) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The browser and where its screenshots go; a failed wait saves one and shows the page's text.
struct Page {
    browser: Chromium,
    artifacts: PathBuf,
}

impl Page {
    fn expect(&mut self, what: &str, expression: &str) {
        if self.browser.wait_for(LONG, expression) {
            return;
        }
        let shot = self.artifacts.join("dashboard-failed.png");
        self.browser.screenshot(&shot);
        let text = self.browser.eval("document.body.innerText");
        panic!(
            "the dashboard never showed {what} ({expression}); screenshot {}\npage text:\n{}\n\
             page exceptions: {:?}\nchromium log:\n{}",
            shot.display(),
            text.as_str().unwrap_or_default(),
            self.browser.exceptions,
            self.browser.log()
        );
    }

    fn text(&mut self, expression: &str) -> String {
        self.browser
            .eval(expression)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A pool row's `data-weight`, as the page rendered it.
fn weight_of(pool: &str) -> String {
    format!("document.querySelector('tr.pool[data-pool=\"{pool}\"]')?.dataset.weight")
}

#[test]
fn dashboard_shows_pools_weights_and_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = artifact_dir(env!("CARGO_TARGET_TMPDIR"));
    let mut page = Page {
        browser: Chromium::start(1400, 1000),
        artifacts: artifacts.clone(),
    };

    // Without a token configured the page goes straight to the data: no form. This proxy also
    // has a certificate from a file, which the page lists with its expiry.
    let open = World::blue_green()
        .https()
        .fallback_certificate("example.com")
        .admin()
        .start(bin!());
    page.browser
        .navigate(&format!("http://127.0.0.1:{}/", open.admin_port()));
    page.expect(
        "the pools without signing in",
        "document.querySelectorAll('tr.pool').length === 2",
    );
    assert_eq!(
        page.browser.eval("document.getElementById('login').hidden"),
        true
    );
    page.expect(
        "the file certificate with its expiry",
        "/example\\.com\\.crt/.test(document.querySelector('tr.cert[data-source=\"file\"]')?.textContent) \
         && /in \\d+ days/.test(document.querySelector('tr.cert td[data-expiry]')?.textContent)",
    );
    page.browser
        .screenshot(&artifacts.join("dashboard-open.png"));
    drop(open);

    // With a token: the page itself loads without it, holds no data, and asks for it.
    let demo = DemoProcess::start(dir.path(), TOKEN, &["--bad-canary=0.5", "--traffic", "50"]);
    let admin = Admin::new(demo.admin, Some(TOKEN));
    page.browser.navigate(&demo.page());
    page.expect(
        "the sign-in form",
        "!document.getElementById('login').hidden",
    );
    assert_eq!(
        page.browser
            .eval("document.getElementById('app').hidden && !document.querySelector('tr.pool')"),
        true,
        "data shown before signing in"
    );

    // A wrong token is refused by the API, and the form says so.
    page.browser
        .eval("document.getElementById('token').focus()");
    page.browser.type_text("not-the-token");
    page.browser
        .eval("document.getElementById('login-submit').click()");
    page.expect(
        "the refusal of a wrong token",
        "document.getElementById('login-error').textContent === 'Wrong token.'",
    );

    // The right token, typed into the form.
    page.browser.eval(
        "document.getElementById('token').value = ''; document.getElementById('token').focus()",
    );
    page.browser.type_text(TOKEN);
    page.browser
        .eval("document.getElementById('login-submit').click()");
    page.expect(
        "both pools after signing in",
        "document.querySelectorAll('tr.pool').length === 2",
    );
    assert_eq!(
        page.browser.eval("document.getElementById('login').hidden"),
        true
    );
    assert_eq!(page.text(&weight_of("blue")), "100");
    assert_eq!(page.text(&weight_of("green")), "0");
    assert_eq!(
        page.browser
            .eval("document.querySelectorAll('.server[data-state=\"up\"]').length"),
        2,
        "each pool's server shows up"
    );
    assert_eq!(
        page.text("document.querySelector('.rollout').dataset.state"),
        "none"
    );
    // Live figures and a chart with blue's traffic before the rollout.
    page.expect(
        "blue's requests per second",
        "parseFloat(document.querySelector('tr.pool[data-pool=\"blue\"] .rps').textContent) > 0",
    );
    page.expect(
        "blue's traffic in the chart",
        "parseFloat(document.querySelector('g.area[data-pool=\"blue\"]')?.dataset.lastShare) > 0.9",
    );
    // Some history before the rollout, so the chart (and the screenshot) shows the change.
    page.expect(
        "a few samples in the chart",
        "parseInt(document.querySelector('svg.chart').dataset.samples) >= 6",
    );

    // A rollout of the failing green: it rises, then rolls back on its own. With the demo's own
    // limits the first two errors end it within a second; these hold it at 25 % until more than
    // 18 errors are in the 10 s window (about 4 s at 50 requests/s), so the rise shows in the
    // chart. The rollback needs the demo to send at least about 15 requests/s.
    let started = admin.send(
        "POST",
        "/v1/services/demo/rollouts",
        Some(
            r#"{"canary": "green", "steps": [25, 100], "interval": "60s",
                "max_error_rate": 0.3, "min_requests": 60}"#,
        ),
        &[],
    );
    assert_eq!(started.status, 201, "{}", started.text);
    page.expect(
        "the rollback in the rollout panel",
        "document.querySelector('.rollout')?.dataset.state === 'rolled_back'",
    );
    page.expect(
        "the started and rolled_back events",
        "!!document.querySelector('tr.event[data-event=\"started\"]') \
         && !!document.querySelector('tr.event[data-event=\"rolled_back\"]')",
    );
    let reason = page.text("document.querySelector('.rollout .reason').textContent");
    assert!(reason.contains("error rate"), "{reason}");
    page.expect(
        "the weights back on blue",
        &format!(
            "{} === '100' && {} === '0'",
            weight_of("blue"),
            weight_of("green")
        ),
    );
    // The chart: green's share rose above 0, then fell back to 0, with a rollback marker.
    page.expect(
        "green's rise in the chart",
        "parseFloat(document.querySelector('g.area[data-pool=\"green\"]').dataset.maxShare) > 0",
    );
    page.expect(
        "green back at 0 in the chart",
        "document.querySelector('g.area[data-pool=\"green\"]').dataset.lastShare === '0.000'",
    );
    page.expect(
        "the rollback marker in the chart",
        "!!document.querySelector('svg.chart line.marker[data-event=\"rolled_back\"]')",
    );
    // The page read everything with the token in a header: it never put it in a URL.
    let urls = page.browser.eval(
        "performance.getEntriesByType('resource').map(e => e.name).concat([location.href]).join(' ')",
    );
    assert!(
        !urls.as_str().unwrap().contains(TOKEN),
        "the token went into a URL: {urls}"
    );
    assert!(
        page.browser.exceptions.is_empty(),
        "the page threw: {:?}",
        page.browser.exceptions
    );

    let shot = artifacts.join("dashboard.png");
    page.browser.screenshot(&shot);
    println!("dashboard screenshot: {}", shot.display());
}
