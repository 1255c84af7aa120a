//! `render.yaml` against Render's documented fields, itself, the code, the
//! README and the binaries; and each check shown to fail on a broken copy.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use fastprep_tests::blueprint::{
    self, Blueprint, check_commands, check_env, check_references, check_secrets, check_shape,
    env_reads, help_subcommands, readme_rows, simple_commands,
};

/// The secrets of the original runbook's recovery steps.
const SECRETS: &[&str] = &[
    "S3_ENDPOINT",
    "S3_BUCKET",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "TG_ADAPTER_TOKEN",
    "TG_API_ID",
    "TG_API_HASH",
    "TDLIB_ENCRYPTION_KEY",
    "SLACK_WEBHOOK_URL",
];
/// Of those, the ones Render may generate (and the others copy).
const GENERATED: &[&str] = &["TG_ADAPTER_TOKEN"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn blueprint() -> Blueprint {
    Blueprint::parse(&read("render.yaml")).unwrap_or_else(|e| panic!("render.yaml: {e}"))
}

/// Where the code that runs, and the tools and tests around it, live.
const SOURCE_DIRS: &[&str] = &[
    "platform/src",
    "schema/src",
    "broker-config/src",
    "storage/src",
    "api/src",
    "consumers/src",
    "tg-adapter/src",
    "tests/src",
    "tests/tests",
    "bench/src",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn code_reads() -> BTreeSet<String> {
    let mut files = Vec::new();
    for d in SOURCE_DIRS {
        rust_files(&root().join(d), &mut files);
    }
    let this_file = root().join("tests/tests/blueprint.rs");
    files
        .iter()
        .filter(|f| **f != this_file)
        .flat_map(|f| env_reads(&std::fs::read_to_string(f).expect("read source")))
        .collect()
}

/// The workspace's binaries, from its members' manifests: `[[bin]]`
/// entries, `src/main.rs` (named after the package) and `src/bin/*.rs`.
fn workspace_bins() -> BTreeSet<String> {
    let manifest = read("Cargo.toml");
    let members = regex::Regex::new(r"(?s)members\s*=\s*\[(.*?)\]")
        .unwrap()
        .captures(&manifest)
        .expect("workspace members")[1]
        .to_owned();
    let quoted = regex::Regex::new(r#""([^"]+)""#).unwrap();
    let bin_name = regex::Regex::new(r#"(?s)\[\[bin\]\]\s*name\s*=\s*"([^"]+)""#).unwrap();
    let package_name = regex::Regex::new(r#"(?m)^name\s*=\s*"([^"]+)""#).unwrap();
    let mut bins = BTreeSet::new();
    for m in quoted.captures_iter(&members) {
        let dir = root().join(&m[1]);
        let toml = std::fs::read_to_string(dir.join("Cargo.toml")).expect("member manifest");
        bins.extend(bin_name.captures_iter(&toml).map(|c| c[1].to_owned()));
        if dir.join("src/main.rs").exists() && !toml.contains("[[bin]]") {
            bins.insert(package_name.captures(&toml).expect("package name")[1].to_owned());
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "rs") {
                    bins.insert(p.file_stem().unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    bins
}

/// Each binary the blueprint starts, with the subcommands its `--help`
/// lists (run with an empty environment: a binary without a command line
/// of its own must not find a database to work on).
fn bins_with_subcommands(bp: &Blueprint) -> BTreeMap<String, BTreeSet<String>> {
    let started: BTreeSet<String> = bp
        .services
        .iter()
        .flat_map(|s| {
            [s.pre_deploy_command.clone(), s.start_command.clone()]
                .into_iter()
                .flatten()
        })
        .flat_map(|line| simple_commands(&line))
        .filter_map(|c| {
            c.program
                .strip_prefix(blueprint::RELEASE_DIR)
                .map(str::to_owned)
        })
        .collect();
    let dir = fastprep_tests::process::bin_dir();
    workspace_bins()
        .into_iter()
        .map(|bin| {
            let subcommands = if started.contains(&bin) {
                let path = dir.join(&bin);
                let out = Command::new(&path)
                    .arg("--help")
                    .env_clear()
                    .output()
                    .unwrap_or_else(|e| {
                        panic!(
                            "{}: {e} (build the binaries first: cargo build --workspace --bins)",
                            path.display()
                        )
                    });
                help_subcommands(&format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            } else {
                BTreeSet::new()
            };
            (bin, subcommands)
        })
        .collect()
}

fn assert_none(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

fn assert_finds(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem naming {needle:?}, got {problems:#?}"
    );
}

// --- The real files --------------------------------------------------------

#[test]
fn render_yaml_parses_into_renders_documented_fields() {
    let bp = blueprint();
    assert_none("shape", check_shape(&bp));
    let names: BTreeSet<&str> = bp.services.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "fastprep-api",
        "fastprep-relay",
        "fastprep-tg-delivery",
        "fastprep-inbound",
        "fastprep-authz-fanout",
        "fastprep-alerts",
        "fastprep-tg-adapter",
        "fastprep-rabbitmq",
        "fastprep-redis",
        "fastprep-web",
    ] {
        assert!(names.contains(expected), "render.yaml has no {expected}");
    }
}

#[test]
fn every_from_service_and_from_database_resolves() {
    assert_none("references", check_references(&blueprint()));
}

#[test]
fn the_runbooks_secrets_are_set_by_hand_or_generated() {
    assert_none("secrets", check_secrets(&blueprint(), SECRETS, GENERATED));
}

#[test]
fn variables_the_code_reads_are_wired_or_documented_and_the_readme_lists_only_those() {
    let rows = readme_rows(&read("README.md"));
    assert!(
        rows.len() > 50,
        "the README's table was not found ({} rows)",
        rows.len()
    );
    assert_none("variables", check_env(&blueprint(), &code_reads(), &rows));
}

#[test]
fn start_commands_name_binaries_and_subcommands_that_exist() {
    let bp = blueprint();
    let bins = bins_with_subcommands(&bp);
    assert!(
        bins.get("fastprep-consumers")
            .is_some_and(|s| s.contains("tg-delivery")),
        "fastprep-consumers --help lists no tg-delivery: {bins:?}"
    );
    assert_none("commands", check_commands(&bp, &bins));
}

#[test]
fn the_api_is_checked_migrated_and_the_adapter_keeps_its_disk() {
    let bp = blueprint();
    let api = bp.service("fastprep-api").unwrap();
    assert_eq!(api.health_check_path.as_deref(), Some("/api/health"));
    assert!(
        api.pre_deploy_command
            .as_deref()
            .unwrap()
            .contains("fastprep-migrate")
    );
    let adapter = bp.service("fastprep-tg-adapter").unwrap();
    assert_eq!(adapter.kind, blueprint::ServiceType::Pserv);
    let disk = adapter.disk.as_ref().expect("the adapter's disk");
    let data_dir = adapter
        .var("DATA_DIR")
        .and_then(|v| v.value.clone())
        .unwrap();
    assert_eq!(data_dir.as_text(), disk.mount_path);
    let web = bp.service("fastprep-web").unwrap();
    assert!(
        web.routes
            .iter()
            .any(|r| r.source == "/*" && r.destination == "/index.html")
    );
}

// --- Each check fails on a broken copy ------------------------------------

fn broken(from: &str, to: &str) -> Blueprint {
    let yaml = read("render.yaml");
    assert!(yaml.contains(from), "render.yaml has no {from:?} to break");
    Blueprint::parse(&yaml.replacen(from, to, 1)).expect("the broken copy still parses")
}

#[test]
fn an_unknown_key_is_refused() {
    let yaml = read("render.yaml").replacen("healthCheckPath:", "healthcheckPath:", 1);
    let err = Blueprint::parse(&yaml).unwrap_err();
    assert!(err.contains("healthcheckPath"), "{err}");
    let yaml = read("render.yaml").replacen("sizeGB: 1", "sizeGB: 1\n      size: 2", 1);
    assert!(Blueprint::parse(&yaml).unwrap_err().contains("size"));
    let yaml = read("render.yaml").replacen("type: worker", "type: background", 1);
    assert!(Blueprint::parse(&yaml).is_err());
}

#[test]
fn a_dangling_reference_is_found() {
    let bp = broken(
        "fromDatabase: { name: fastprep-db,",
        "fromDatabase: { name: fastprep-pg,",
    );
    assert_finds(&check_references(&bp), "database fastprep-pg");
    let bp = broken(
        "name: fastprep-rabbitmq, property: hostport",
        "name: fastprep-rabbit, property: hostport",
    );
    assert_finds(&check_references(&bp), "service fastprep-rabbit");
    let bp = broken(
        "envVarKey: RABBITMQ_DEFAULT_PASS",
        "envVarKey: RABBITMQ_PASS",
    );
    assert_finds(&check_references(&bp), "RABBITMQ_PASS");
    let bp = broken(
        "{ type: keyvalue, name: fastprep-redis",
        "{ type: pserv, name: fastprep-redis",
    );
    assert_finds(&check_references(&bp), "Keyvalue");
    let bp = broken(
        "fromService: { type: pserv, name: fastprep-tg-adapter, property: hostport }",
        "fromService: { type: worker, name: fastprep-relay, property: hostport }",
    );
    assert_finds(&check_references(&bp), "Worker does not have");
}

#[test]
fn a_malformed_entry_is_found() {
    let bp = broken(
        "generateValue: true",
        "generateValue: true\n        value: x",
    );
    assert_finds(&check_shape(&bp), "more than one source");
    let bp = broken("        sync: false", "        sync: true");
    assert_finds(&check_shape(&bp), "no source");
    let bp = broken(
        "    numInstances: 1\n    buildCommand: cargo build --release --locked --bin fastprep-tg-adapter",
        "    numInstances: 2\n    buildCommand: cargo build --release --locked --bin fastprep-tg-adapter",
    );
    assert_finds(&check_shape(&bp), "one instance");
    let bp = broken("    maxmemoryPolicy: noeviction\n    ipAllowList: []\n", "");
    assert_finds(&check_shape(&bp), "ipAllowList");
}

#[test]
fn a_secret_with_a_value_is_found() {
    let bp = broken(
        "- key: TG_API_HASH\n        sync: false",
        "- key: TG_API_HASH\n        value: 0123456789abcdef0123456789abcdef",
    );
    let problems = check_secrets(&bp, SECRETS, GENERATED);
    assert_finds(&problems, "TG_API_HASH must be `sync: false`");
    assert_finds(&problems, "TG_API_HASH is not set by hand");
    let bp = broken("- key: SLACK_WEBHOOK_URL\n        sync: false\n", "");
    assert_finds(
        &check_secrets(&bp, SECRETS, GENERATED),
        "SLACK_WEBHOOK_URL is not set",
    );
}

#[test]
fn variables_unread_undocumented_or_unwired_are_found() {
    let bp = blueprint();
    let readme = read("README.md");
    let reads = code_reads();
    // A variable the code reads that the README does not list.
    let mut more = reads.clone();
    more.insert("FASTPREP_NEW_KNOB".into());
    assert_finds(
        &check_env(&bp, &more, &readme_rows(&readme)),
        "FASTPREP_NEW_KNOB is read",
    );
    // A row for a variable no code reads.
    let extra = readme.replacen(
        "| `PORT` |",
        "| `FASTPREP_GONE` | api | 1 | gone |\n| `PORT` |",
        1,
    );
    assert_finds(
        &check_env(&bp, &reads, &readme_rows(&extra)),
        "lists FASTPREP_GONE",
    );
    // A required variable of a deployed process that nothing wires.
    let unwired = Blueprint::parse(
        &read("render.yaml").replace(
            "      - key: DATABASE_URL\n        fromDatabase: { name: fastprep-db, property: connectionString }\n",
            "",
        ),
    )
    .unwrap();
    assert_finds(
        &check_env(&unwired, &reads, &readme_rows(&readme)),
        "DATABASE_URL is required",
    );
    // A variable one process requires, missing on the service that runs it
    // while other services have it.
    let relay_without_db = Blueprint::parse(&read("render.yaml").replacen(
        "exec target/release/fastprep-consumers relay\n    buildFilter:\n      ignoredPaths: [\"frontend/**\", \"docs/**\", \"bench/**\", \"*.md\"]\n    envVars:\n      - key: DATABASE_URL\n        fromDatabase: { name: fastprep-db, property: connectionString }\n",
        "exec target/release/fastprep-consumers relay\n    buildFilter:\n      ignoredPaths: [\"frontend/**\", \"docs/**\", \"bench/**\", \"*.md\"]\n    envVars:\n",
        1,
    ))
    .unwrap();
    assert_finds(
        &check_env(&relay_without_db, &reads, &readme_rows(&readme)),
        "fastprep-relay runs relay, which requires DATABASE_URL",
    );
    // A variable set on a service that nothing reads (a typo).
    let typo = broken("- key: LOG_FORMAT", "- key: LOG_FORMATS");
    assert_finds(
        &check_env(&typo, &reads, &readme_rows(&readme)),
        "sets LOG_FORMATS",
    );
    // A command expanding a variable the service does not set.
    let unset = broken("$RABBITMQ_PASSWORD@", "$RABBITMQ_PASWORD@");
    assert_finds(
        &check_env(&unset, &reads, &readme_rows(&readme)),
        "$RABBITMQ_PASWORD",
    );
}

#[test]
fn reads_are_found_in_every_form_the_code_uses() {
    let src = r#"
        let a: String = env.required("DATABASE_URL")?;
        let b = env
            .optional::<String>("SLACK_WEBHOOK_URL")?;
        let c = rate(env, "TG_CHAT_RATE_PER_SEC", 1.0)?;
        let d = std::env::var("LOG_FORMAT");
        // env.required("IN_A_COMMENT")
        #[arg(long, env = "AMQP_URL")]
        let f = EnvFilter::try_from_default_env();
        #[cfg(test)]
        mod tests { fn t() { env.required("ONLY_IN_TESTS"); } }
    "#;
    let reads = env_reads(src);
    let expected: BTreeSet<String> = [
        "AMQP_URL",
        "DATABASE_URL",
        "LOG_FORMAT",
        "RUST_LOG",
        "SLACK_WEBHOOK_URL",
        "TG_CHAT_RATE_PER_SEC",
    ]
    .map(String::from)
    .into();
    assert_eq!(reads, expected);
}

#[test]
fn a_start_command_naming_a_missing_binary_or_subcommand_is_found() {
    let bins: BTreeMap<String, BTreeSet<String>> = [
        ("fastprep-api", vec!["serve", "create-admin", "openapi"]),
        ("fastprep-ops", vec![]),
        ("fastprep-migrate", vec![]),
        ("fastprep-broker", vec!["definitions", "declare"]),
        ("fastprep-tg-adapter", vec!["serve", "login", "rotate-key"]),
        (
            "fastprep-consumers",
            vec![
                "relay",
                "tg-delivery",
                "inbound",
                "authz-fanout",
                "alerts",
                "all",
            ],
        ),
    ]
    .into_iter()
    .map(|(b, s)| (b.to_owned(), s.into_iter().map(String::from).collect()))
    .collect();
    assert_none(
        "commands with the real names",
        check_commands(&blueprint(), &bins),
    );
    let bp = broken("fastprep-consumers relay", "fastprep-consumers relays");
    assert_finds(&check_commands(&bp, &bins), "no subcommand relays");
    let bp = broken(
        "exec target/release/fastprep-api serve",
        "exec target/release/fastprep-apid serve",
    );
    assert_finds(&check_commands(&bp, &bins), "fastprep-apid is not a binary");
    let bp = broken(
        "exec target/release/fastprep-api serve",
        "exec target/release/fastprep-api",
    );
    assert_finds(&check_commands(&bp, &bins), "without naming");
    let bp = broken(
        "cargo build --release --locked --bin fastprep-tg-adapter",
        "cargo build --release --locked --bin fastprep-consumers",
    );
    assert_finds(
        &check_commands(&bp, &bins),
        "does not build fastprep-tg-adapter",
    );
}

#[test]
fn help_texts_give_subcommands_and_possible_values() {
    let clap_subcommands = "Usage: x <COMMAND>\n\nCommands:\n  serve         Serves\n  create-admin  Creates\n  help          Print this\n\nOptions:\n  -h, --help  Print help\n";
    assert_eq!(
        help_subcommands(clap_subcommands),
        ["create-admin", "serve"].map(String::from).into()
    );
    let value_enum = "Usage: x <PROCESS>\n\nArguments:\n  <PROCESS>\n          Which process to run\n          [possible values: relay, tg-delivery, all]\n";
    assert_eq!(
        help_subcommands(value_enum),
        ["all", "relay", "tg-delivery"].map(String::from).into()
    );
    let documented_values = "Usage: x <PROCESS>\n\nArguments:\n  <PROCESS>\n          Which\n\n          Possible values:\n          - relay\n          - tg-delivery\n          - all:          Relay and every consumer\n\nOptions:\n  -h, --help\n          Print help\n";
    assert_eq!(
        help_subcommands(documented_values),
        ["all", "relay", "tg-delivery"].map(String::from).into()
    );
    assert!(help_subcommands("Error: DATABASE_URL is required").is_empty());
    let cmds =
        simple_commands(r#"A="x y" B=$C exec target/release/b serve && target/release/m > out"#);
    assert_eq!(cmds.len(), 2);
    assert_eq!(cmds[0].assigns, ["A", "B"]);
    assert_eq!(cmds[0].program, "target/release/b");
    assert_eq!(cmds[0].args, ["serve"]);
    assert_eq!(cmds[1].program, "target/release/m");
}
