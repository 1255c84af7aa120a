//! HTTP helpers for talking to the API and the sandbox adapter.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::env::SANDBOX_TOKEN;

#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Self {
            inner: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    pub fn raw(&self) -> &reqwest::Client {
        &self.inner
    }

    /// Sends a JSON request with an optional bearer token; returns status and body.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.try_call(method, url, token, body)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// As [`Self::call`], with a transport error (refused, timed out)
    /// returned instead of a panic: for load generators that count them.
    pub async fn try_call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let mut req = self.inner.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// A GET with a bearer token; returns status and body.
    pub async fn get(&self, url: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, url, Some(token), None).await
    }

    /// The body of a plain GET (a `/metrics` page), panicking on failure.
    pub async fn text(&self, url: &str) -> String {
        self.inner
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, api: &str, email: &str, password: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("{api}/api/auth/login"),
                None,
                Some(serde_json::json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login failed: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Calls a sandbox control route of the adapter.
    pub async fn sandbox(
        &self,
        adapter: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(
            method,
            &format!("{adapter}{path}"),
            Some(SANDBOX_TOKEN),
            body,
        )
        .await
    }
}
