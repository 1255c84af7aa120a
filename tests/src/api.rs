//! A typed client of the API for the suites: requests are built from the
//! API's own paths and answers are read into the API's own DTOs, so a
//! field renamed on one side fails to compile or to parse here.

use api::{
    accounts::{roles::Role, sessions::Me, users::User},
    audit::AuditRecord,
    inbox::{
        contacts::Contact,
        conversations::Conversation,
        messages::{Message, Versions},
    },
    page::Page,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::http::Client;

/// An answer the API refused: its status and error body.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub body: Value,
}

impl Refused {
    /// The error code of the `{"error": {"code", …}}` envelope.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

pub type Answer<T> = Result<T, Refused>;

/// The API at `base`, called as the holder of `token`.
#[derive(Clone)]
pub struct Api {
    http: Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(http: &Client, base: &str, token: &str) -> Self {
        Self {
            http: http.clone(),
            base: base.to_owned(),
            token: token.to_owned(),
        }
    }

    /// Calls `path` under `/api`; a 2xx answer is read into `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer<(StatusCode, T)> {
        let url = format!("{}/api{path}", self.base);
        let (status, body) = self.http.call(method, &url, Some(&self.token), body).await;
        if !status.is_success() {
            return Err(Refused { status, body });
        }
        let parsed = serde_json::from_value(body.clone()).unwrap_or_else(|e| {
            panic!("{path} answered {status} with a body the API's types do not read: {e}\n{body}")
        });
        Ok((status, parsed))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Answer<T> {
        self.call(Method::GET, path, None).await.map(|(_, v)| v)
    }

    /// `GET /conversations?{query}`.
    pub async fn conversations(&self, query: &str) -> Answer<Page<Conversation>> {
        self.get(&format!("/conversations?{query}")).await
    }

    pub async fn conversation(&self, id: &str) -> Answer<Conversation> {
        self.get(&format!("/conversations/{id}")).await
    }

    /// `POST /conversations/{id}/read`.
    pub async fn mark_read(&self, id: &str) -> Answer<StatusCode> {
        let url = format!("{}/api/conversations/{id}/read", self.base);
        let (status, body) = self
            .http
            .call(Method::POST, &url, Some(&self.token), None)
            .await;
        if status.is_success() {
            Ok(status)
        } else {
            Err(Refused { status, body })
        }
    }

    /// `GET /conversations/{id}/messages?{query}`.
    pub async fn messages(&self, conversation: &str, query: &str) -> Answer<Page<Message>> {
        self.get(&format!("/conversations/{conversation}/messages?{query}"))
            .await
    }

    /// `POST /conversations/{id}/messages`: the status (202) and the reply.
    pub async fn reply(
        &self,
        conversation: &str,
        text: &str,
        client_msg_id: &str,
    ) -> Answer<(StatusCode, Message)> {
        self.write(conversation, "messages", text, client_msg_id)
            .await
    }

    /// `POST /conversations/{id}/notes`.
    pub async fn note(
        &self,
        conversation: &str,
        text: &str,
        client_msg_id: &str,
    ) -> Answer<(StatusCode, Message)> {
        self.write(conversation, "notes", text, client_msg_id).await
    }

    async fn write(
        &self,
        conversation: &str,
        what: &str,
        text: &str,
        client_msg_id: &str,
    ) -> Answer<(StatusCode, Message)> {
        self.call(
            Method::POST,
            &format!("/conversations/{conversation}/{what}"),
            Some(json!({"text": text, "client_msg_id": client_msg_id})),
        )
        .await
    }

    pub async fn versions(&self, conversation: &str, message: &str) -> Answer<Versions> {
        self.get(&format!(
            "/conversations/{conversation}/messages/{message}/versions"
        ))
        .await
    }

    pub async fn contact(&self, id: &str) -> Answer<Contact> {
        self.get(&format!("/contacts/{id}")).await
    }

    /// `GET /audit?{query}`.
    pub async fn audit(&self, query: &str) -> Answer<Page<AuditRecord>> {
        self.get(&format!("/audit?{query}")).await
    }

    pub async fn me(&self) -> Answer<Me> {
        self.get("/auth/me").await
    }

    pub async fn users(&self) -> Answer<Vec<User>> {
        self.get("/users").await
    }

    pub async fn roles(&self) -> Answer<Vec<Role>> {
        self.get("/roles").await
    }
}
