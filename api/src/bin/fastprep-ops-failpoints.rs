//! `fastprep-ops` with its fail points armed from `FAILPOINTS`, for the
//! fault tests. Built only with `--features failpoints` (`scripts/test`);
//! the shipped binary has no fail points and reads no `FAILPOINTS`.

#[tokio::main]
async fn main() {
    let code = {
        let _armed = fail::FailScenario::setup();
        api::ops::cli::main().await
    };
    std::process::exit(code);
}
