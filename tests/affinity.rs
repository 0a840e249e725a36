//! Server affinity (`[services.NAME.affinity]`): a cookie client stays on one server, moves once when it dies and stays on the new one; the cookie hides the address, has the right attributes, outlives a restart and works beside pool stickiness.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use testkit::*;

const BIN: Bin = testkit::bin!();

/// What one request got: the server that answered and the `srv` Set-Cookie line, if any.
#[derive(Debug)]
struct Answer {
    backend: String,
    set_cookie: Option<String>,
    /// Every Set-Cookie line.
    all_cookies: Vec<String>,
}

/// GET `url` sending `cookies` (a Cookie header value) if not empty.
fn get(client: &reqwest::blocking::Client, url: &str, cookies: &str) -> Answer {
    let mut req = client.get(url);
    if !cookies.is_empty() {
        req = req.header("cookie", cookies);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), 200, "{url} with {cookies:?}");
    let all_cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let set_cookie = all_cookies.iter().find(|c| c.starts_with("srv=")).cloned();
    Answer {
        backend: json_body(resp)["backend"].as_str().unwrap().to_string(),
        set_cookie,
        all_cookies,
    }
}

/// `NAME=VALUE` of a Set-Cookie line.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_string()
}

/// Three echo backends the test owns (so it can stop one), named s1, s2 and s3.
fn servers() -> Vec<Backend> {
    ["s1", "s2", "s3"]
        .iter()
        .map(|n| Backend::spawn(n).unwrap())
        .collect()
}

/// Service "api" on every host: one pool of `servers` and the backup server "backup" (which
/// takes requests only while they are all down), affinity cookie "srv" for an hour.
fn world(servers: &[Backend]) -> World {
    let mut w = World::new().backend("backup");
    for s in servers {
        w = w.address(s.name(), s.addr);
    }
    w.route("*", "api").toml(
        "[services.api.pools.main]\n\
         servers = [\"{s1}\", \"{s2}\", \"{s3}\", { address = \"{backup}\", backup = true }]\n\n\
         [services.api.affinity]\ncookie = \"srv\"\nttl = \"1h\"\n",
    )
}

#[test]
fn a_cookie_client_sticks_to_its_server_and_moves_once_when_it_dies() {
    let mut servers = servers();
    let w = world(&servers).start(BIN);
    let client = http1_client();
    let url = w.url("api.test", "/a");

    // Without the cookie, requests spread over the servers.
    let spread: std::collections::BTreeSet<String> =
        (0..3).map(|_| get(&client, &url, "").backend).collect();
    assert!(spread.len() >= 2, "{spread:?}");

    let first = get(&client, &url, "");
    let set = first
        .set_cookie
        .expect("a new client gets its server's cookie");
    let value = pair(&set)["srv=".len()..].to_string();
    assert!(
        value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "{set}"
    );
    for s in &servers {
        let (ip, port) = (s.addr.ip().to_string(), s.addr.port().to_string());
        assert!(
            !set.contains(&ip) && !value.contains(&port),
            "the cookie shows {}: {set}",
            s.addr
        );
    }
    let attributes: Vec<&str> = set.split(';').skip(1).map(str::trim).collect();
    assert_eq!(
        attributes,
        ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"],
        "{set}"
    );

    let cookie = pair(&set);
    for i in 0..100 {
        let a = get(&client, &url, &format!("a=1; {cookie}"));
        assert_eq!(a.backend, first.backend, "request {i} moved");
        assert_eq!(
            a.set_cookie, None,
            "request {i}: the cookie is not rewritten"
        );
    }

    // Its server dies: the client moves to another one (not the backup: two servers are up),
    // once, and stays there.
    let dead = servers
        .iter()
        .position(|s| s.name() == first.backend)
        .unwrap();
    servers.remove(dead).stop();
    let moved = get(&client, &url, &cookie);
    assert_ne!(moved.backend, first.backend);
    assert_ne!(moved.backend, "backup");
    let new_cookie = pair(&moved.set_cookie.expect("the cookie names the new server"));
    assert_ne!(new_cookie, cookie);
    for i in 0..100 {
        let a = get(&client, &url, &new_cookie);
        assert_eq!(a.backend, moved.backend, "request {i} after the move");
        assert_eq!(a.set_cookie, None);
    }
    assert_eq!(
        w.backend("backup").requests(),
        0,
        "the backup was never needed"
    );
}

#[test]
fn the_cookie_is_secure_on_tls_and_outlives_a_restart() {
    let servers = servers();
    let mut w = world(&servers)
        .https()
        .certificate("example.com")
        .start(BIN);
    let client = https_client();
    let url = format!("https://api.example.com:{}/a", w.https());
    let first = get(&client, &url, "");
    let set = first.set_cookie.unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
    let cookie = pair(&set);
    assert!(
        w.proxy.dir().join("state/affinity.key").is_file(),
        "the key is kept in the state directory"
    );

    // Same key after a restart: the cookie still names the same server.
    w.restart(&w.config());
    for _ in 0..10 {
        let a = get(&client, &url, &cookie);
        assert_eq!(
            (a.backend.as_str(), a.set_cookie),
            (first.backend.as_str(), None)
        );
    }
    // The plain listener has the same servers behind it, with no Secure attribute.
    let plain = get(&http1_client(), &w.url("api.test", "/a"), "");
    assert!(!plain.set_cookie.unwrap().contains("Secure"));
}

#[test]
fn affinity_picks_the_server_inside_the_pool_that_stickiness_gives() {
    let names = ["blue1", "blue2", "green1", "green2"];
    let mut world = World::new();
    for n in names {
        world = world.backend(n);
    }
    let w = world
        .route("*", "api")
        .pool("api", "blue", 50, &["blue1", "blue2"])
        .pool("api", "green", 50, &["green1", "green2"])
        .toml(
            "[services.api.sticky]\nkey = \"cookie\"\n\n\
             [services.api.affinity]\ncookie = \"srv\"\n",
        )
        .start(BIN);
    let client = http1_client();
    let url = w.url("api.test", "/a");
    let mut by_pool: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let first = get(&client, &url, "");
        let cookies: Vec<String> = first.all_cookies.iter().map(|c| pair(c)).collect();
        assert_eq!(cookies.len(), 2, "a sticky id and a server: {cookies:?}");
        let cookies = cookies.join("; ");
        for _ in 0..10 {
            assert_eq!(get(&client, &url, &cookies).backend, first.backend);
        }
        let pool = first.backend.trim_end_matches(char::is_numeric).to_string();
        by_pool.entry(pool).or_default().push(cookies.clone());
        clients.push((first.backend, cookies));
    }
    assert_eq!(by_pool.len(), 2, "20 clients over two pools: {by_pool:?}");

    // A green client carrying a blue server's cookie stays green (the pool choice wins) and is
    // given a green server's cookie.
    let blue_srv = by_pool["blue"][0]
        .split("; ")
        .find(|c| c.starts_with("srv="))
        .unwrap();
    let green_id = by_pool["green"][0]
        .split("; ")
        .find(|c| !c.starts_with("srv="))
        .unwrap();
    let mixed = get(&client, &url, &format!("{green_id}; {blue_srv}"));
    assert!(mixed.backend.starts_with("green"), "{mixed:?}");
    let fixed = pair(&mixed.set_cookie.unwrap());
    let again = get(&client, &url, &format!("{green_id}; {fixed}"));
    assert_eq!((again.backend, again.set_cookie), (mixed.backend, None));
}
