//! The test's own database on the shared PostgreSQL server.

/// A database of this test's own, dropped (forcibly) when the test ends,
/// passes or panics. Named `fastprep_test_…` so `scripts/test` sweeps one an
/// interrupted run left behind.
pub struct TestDatabase {
    server: String,
    name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        // The same server and override as the end-to-end suites (`tests/src/env.rs`).
        let server = std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let name = format!("fastprep_test_entities_{}", uuid::Uuid::new_v4().simple());
        let admin = schema::pool::connect(&admin_url(&server), 1)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {server} is not answering: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let url = database_url(&server, &name);
        Self { server, name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // On a runtime of its own: the test's may be unwinding.
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(admin) = schema::pool::connect(&admin_url(&server), 1).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

fn admin_url(server: &str) -> String {
    database_url(server, "postgres")
}

/// Over loopback TLS protects nothing, so it is off there, as in `tests/src/env.rs`.
fn database_url(server: &str, database: &str) -> String {
    let loopback = ["@127.0.0.1", "@localhost", "@[::1]"]
        .iter()
        .any(|host| server.contains(host));
    if loopback {
        format!("{server}/{database}?sslmode=disable")
    } else {
        format!("{server}/{database}")
    }
}
