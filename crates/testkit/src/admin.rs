//! A client of the admin API and the answers it gets: status, headers, text and JSON, with accessors for the service views the tests read.

use crate::http::http1_client;

/// A client of the admin API on 127.0.0.1:`port`; sends `token` as a bearer token when set.
pub struct Admin {
    pub port: u16,
    pub token: Option<String>,
    client: reqwest::blocking::Client,
}

/// One admin API answer: status, headers, the body as text and as JSON (`Null` if not JSON).
#[derive(Debug)]
pub struct AdminReply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: serde_json::Value,
}

impl AdminReply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The `error` text of an error body ("" when absent).
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_default()
    }

    /// The weight in force of `pool` in a service view.
    pub fn weight(&self, pool: &str) -> u64 {
        self.pool(pool)["weight"]
            .as_u64()
            .unwrap_or_else(|| panic!("no weight for pool {pool} in {}", self.text))
    }

    /// One pool of a service view.
    pub fn pool(&self, pool: &str) -> &serde_json::Value {
        self.json["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == pool))
            .unwrap_or_else(|| panic!("no pool {pool} in {}", self.text))
    }

    pub fn generation(&self) -> u64 {
        self.json["generation"]
            .as_u64()
            .unwrap_or_else(|| panic!("no generation in {}", self.text))
    }
}

impl Admin {
    pub fn new(port: u16, token: Option<&str>) -> Admin {
        Admin {
            port,
            token: token.map(str::to_string),
            client: http1_client(),
        }
    }

    /// Sends one request; `headers` are added as given.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> AdminReply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("http://127.0.0.1:{}{path}", self.port));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().expect("admin API request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().expect("admin API body");
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        AdminReply {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn get(&self, path: &str) -> AdminReply {
        self.send("GET", path, None, &[])
    }

    /// `PUT /v1/services/{service}/weights` with a JSON body.
    pub fn put_weights(&self, service: &str, body: &str) -> AdminReply {
        self.send(
            "PUT",
            &format!("/v1/services/{service}/weights"),
            Some(body),
            &[],
        )
    }

    /// `POST /v1/services/{service}/switch` to `pool`.
    pub fn switch(&self, service: &str, pool: &str) -> AdminReply {
        let body = serde_json::json!({ "to": pool }).to_string();
        self.send(
            "POST",
            &format!("/v1/services/{service}/switch"),
            Some(&body),
            &[],
        )
    }
}
