//! `render.yaml` as a typed model of Render's documented Blueprint fields,
//! and the checks that hold it to the code: references that resolve, every
//! variable the code reads wired or documented, start commands that name
//! binaries and subcommands that exist. Each check is a pure function of
//! texts, so a test can hand it a broken blueprint, README or help text.
//! The recovery rehearsal (`fastprep-dr-rehearsal`) starts the system from
//! the same model.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde::Deserialize;

// ---------------------------------------------------------------------------
// The model. Unknown keys are refused at every level: a misspelt field is an
// error here, not a setting Render silently ignores.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Blueprint {
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub databases: Vec<Database>,
    #[serde(default)]
    pub env_var_groups: Vec<EnvVarGroup>,
    #[serde(default)]
    pub previews: Option<Previews>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Previews {
    pub generation: PreviewGeneration,
    #[serde(default)]
    pub expire_after_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreviewGeneration {
    Off,
    Manual,
    Automatic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    Web,
    Pserv,
    Worker,
    Cron,
    Keyvalue,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Elixir,
    Go,
    Image,
    Node,
    Python,
    Ruby,
    Rust,
    Static,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    #[serde(rename = "type")]
    pub kind: ServiceType,
    pub name: String,
    #[serde(default)]
    pub runtime: Option<Runtime>,
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub root_dir: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub preview_plan: Option<String>,
    #[serde(default)]
    pub build_command: Option<String>,
    #[serde(default)]
    pub start_command: Option<String>,
    #[serde(default)]
    pub pre_deploy_command: Option<String>,
    #[serde(default)]
    pub docker_command: Option<String>,
    #[serde(default)]
    pub dockerfile_path: Option<String>,
    #[serde(default)]
    pub docker_context: Option<String>,
    #[serde(default)]
    pub registry_credential: Option<FromRegistryCreds>,
    #[serde(default)]
    pub image: Option<Image>,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub health_check_path: Option<String>,
    #[serde(default)]
    pub num_instances: Option<u32>,
    #[serde(default)]
    pub scaling: Option<Scaling>,
    #[serde(default)]
    pub disk: Option<Disk>,
    #[serde(default)]
    pub env_vars: Vec<EnvVar>,
    #[serde(default)]
    pub auto_deploy: Option<bool>,
    #[serde(default)]
    pub auto_deploy_trigger: Option<AutoDeployTrigger>,
    #[serde(default)]
    pub build_filter: Option<BuildFilter>,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub static_publish_path: Option<String>,
    #[serde(default)]
    pub headers: Vec<Header>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub pull_request_previews_enabled: Option<bool>,
    #[serde(default)]
    pub initial_deploy_hook: Option<String>,
    #[serde(default)]
    pub max_shutdown_delay_seconds: Option<u32>,
    #[serde(default)]
    pub ip_allow_list: Option<Vec<IpAllow>>,
    #[serde(default)]
    pub maxmemory_policy: Option<MaxmemoryPolicy>,
    #[serde(default)]
    pub render_subdomain_policy: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FromRegistryCreds {
    pub from_registry_creds: NameRef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRef {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub url: String,
    #[serde(default)]
    pub creds: Option<FromRegistryCreds>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scaling {
    pub min_instances: u32,
    pub max_instances: u32,
    #[serde(default)]
    pub target_memory_percent: Option<u32>,
    #[serde(default, rename = "targetCPUPercent")]
    pub target_cpu_percent: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Disk {
    pub name: String,
    pub mount_path: String,
    #[serde(default, rename = "sizeGB")]
    pub size_gb: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AutoDeployTrigger {
    Commit,
    ChecksPass,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BuildFilter {
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub ignored_paths: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub path: String,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteType {
    Redirect,
    Rewrite,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(rename = "type")]
    pub kind: RouteType,
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpAllow {
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxmemoryPolicy {
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    Noeviction,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Database {
    pub name: String,
    #[serde(default)]
    pub database_name: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub preview_plan: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub postgres_major_version: Option<String>,
    #[serde(default, rename = "diskSizeGB")]
    pub disk_size_gb: Option<u32>,
    #[serde(default)]
    pub ip_allow_list: Option<Vec<IpAllow>>,
    #[serde(default)]
    pub read_replicas: Vec<NameRef>,
    #[serde(default)]
    pub high_availability: Option<HighAvailability>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HighAvailability {
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVarGroup {
    pub name: String,
    #[serde(default)]
    pub env_vars: Vec<EnvVar>,
}

/// A scalar `value:` (YAML may write a number or a boolean unquoted).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn as_text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// One entry of `envVars`: a key with exactly one source, or `fromGroup`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<Scalar>,
    #[serde(default)]
    pub generate_value: Option<bool>,
    #[serde(default)]
    pub sync: Option<bool>,
    #[serde(default)]
    pub from_database: Option<FromDatabase>,
    #[serde(default)]
    pub from_service: Option<FromService>,
    #[serde(default)]
    pub from_group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DatabaseProperty {
    ConnectionString,
    Host,
    Port,
    User,
    Password,
    Database,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromDatabase {
    pub name: String,
    pub property: DatabaseProperty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ServiceProperty {
    Host,
    Port,
    Hostport,
    ConnectionString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FromService {
    #[serde(rename = "type")]
    pub kind: ServiceType,
    pub name: String,
    #[serde(default)]
    pub property: Option<ServiceProperty>,
    #[serde(default)]
    pub env_var_key: Option<String>,
}

/// Where one variable's value comes from, once the entry is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Source<'a> {
    Value(String),
    Generated,
    Prompted,
    Database(&'a str, DatabaseProperty),
    ServiceProperty(ServiceType, &'a str, ServiceProperty),
    ServiceVar(ServiceType, &'a str, &'a str),
}

impl EnvVar {
    /// Its source, or why the entry is malformed (none, or more than one).
    pub fn source(&self) -> Result<Source<'_>, String> {
        let mut sources = Vec::new();
        if let Some(v) = &self.value {
            sources.push(Source::Value(v.as_text()));
        }
        if self.generate_value == Some(true) {
            sources.push(Source::Generated);
        }
        if self.sync == Some(false) {
            sources.push(Source::Prompted);
        }
        if let Some(db) = &self.from_database {
            sources.push(Source::Database(&db.name, db.property));
        }
        if let Some(s) = &self.from_service {
            match (&s.property, &s.env_var_key) {
                (Some(p), None) => sources.push(Source::ServiceProperty(s.kind, &s.name, *p)),
                (None, Some(k)) => sources.push(Source::ServiceVar(s.kind, &s.name, k)),
                _ => return Err("fromService needs exactly one of property and envVarKey".into()),
            }
        }
        match sources.len() {
            1 => Ok(sources.remove(0)),
            0 => Err(
                "has no source (value, generateValue, sync: false, fromDatabase or fromService)"
                    .into(),
            ),
            _ => Err("has more than one source".into()),
        }
    }
}

impl Blueprint {
    pub fn parse(yaml: &str) -> Result<Self, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

impl Service {
    /// The keys this service sets, from its own entries (groups excluded).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.env_vars.iter().filter_map(|v| v.key.as_deref())
    }

    pub fn var(&self, key: &str) -> Option<&EnvVar> {
        self.env_vars.iter().find(|v| v.key.as_deref() == Some(key))
    }

    /// Whether it runs our code: a Rust service (not an image, not static).
    pub fn runs_our_code(&self) -> bool {
        self.runtime == Some(Runtime::Rust)
    }

    /// Its shell commands: build, pre-deploy, start.
    pub fn commands(&self) -> impl Iterator<Item = &str> {
        [
            self.build_command.as_deref(),
            self.pre_deploy_command.as_deref(),
            self.start_command.as_deref(),
        ]
        .into_iter()
        .flatten()
    }
}

// ---------------------------------------------------------------------------
// Structural checks: the rules the documentation states for each kind.

/// Problems with the blueprint's shape beyond the field names: each
/// variable's source, names, what each kind of service needs.
pub fn check_shape(bp: &Blueprint) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for s in &bp.services {
        if !names.insert(&s.name) {
            problems.push(format!("service {} is defined twice", s.name));
        }
        let runtime_needed = !matches!(s.kind, ServiceType::Keyvalue | ServiceType::Redis);
        if runtime_needed && s.runtime.is_none() {
            problems.push(format!("service {} has no runtime", s.name));
        }
        match (s.kind, s.runtime) {
            (ServiceType::Keyvalue | ServiceType::Redis, _) => {
                if s.ip_allow_list.is_none() {
                    problems.push(format!(
                        "{}: a Key Value instance needs ipAllowList",
                        s.name
                    ));
                }
            }
            (_, Some(Runtime::Static)) => {
                if s.kind != ServiceType::Web {
                    problems.push(format!("{}: a static site is a `web` service", s.name));
                }
                if s.static_publish_path.is_none() {
                    problems.push(format!("{}: a static site needs staticPublishPath", s.name));
                }
                if s.start_command.is_some() {
                    problems.push(format!("{}: a static site has no startCommand", s.name));
                }
            }
            (_, Some(Runtime::Image)) => {
                if s.image.is_none() {
                    problems.push(format!("{}: runtime image needs image.url", s.name));
                }
            }
            (_, Some(Runtime::Docker)) => {}
            (_, Some(_)) => {
                if s.build_command.is_none() || s.start_command.is_none() {
                    problems.push(format!(
                        "{}: a native runtime needs buildCommand and startCommand",
                        s.name
                    ));
                }
            }
            (_, None) => {}
        }
        if !s.routes.is_empty() && s.runtime != Some(Runtime::Static) {
            problems.push(format!("{}: routes are for static sites", s.name));
        }
        if s.health_check_path.is_some() && s.kind != ServiceType::Web {
            problems.push(format!("{}: healthCheckPath is for web services", s.name));
        }
        if s.disk.is_some() {
            if s.num_instances.unwrap_or(1) > 1 || s.scaling.is_some() {
                problems.push(format!(
                    "{}: a service with a disk runs one instance (no numInstances > 1, no scaling)",
                    s.name
                ));
            }
            if matches!(s.kind, ServiceType::Worker | ServiceType::Cron)
                || s.runtime == Some(Runtime::Static)
            {
                problems.push(format!(
                    "{}: this kind of service cannot have a disk",
                    s.name
                ));
            }
        }
        if s.num_instances.is_some() && s.scaling.is_some() {
            problems.push(format!(
                "{}: numInstances and scaling exclude each other",
                s.name
            ));
        }
        let mut keys = BTreeSet::new();
        for v in &s.env_vars {
            match (&v.key, &v.from_group) {
                (None, Some(_)) if v.source().is_err() => {}
                (None, Some(_)) => {
                    problems.push(format!("{}: fromGroup takes no other field", s.name))
                }
                (Some(key), None) => {
                    if !keys.insert(key) {
                        problems.push(format!("{}: {key} is set twice", s.name));
                    }
                    if let Err(e) = v.source() {
                        problems.push(format!("{}: {key} {e}", s.name));
                    }
                }
                _ => problems.push(format!(
                    "{}: an envVars entry needs a key or fromGroup alone",
                    s.name
                )),
            }
        }
    }
    let mut dbs = BTreeSet::new();
    for d in &bp.databases {
        if !dbs.insert(&d.name) {
            problems.push(format!("database {} is defined twice", d.name));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// References: every fromService / fromDatabase / fromGroup names something
// defined, of the right kind, with the property or variable it asks for.

pub fn check_references(bp: &Blueprint) -> Vec<String> {
    let mut problems = Vec::new();
    let groups: BTreeSet<&str> = bp.env_var_groups.iter().map(|g| g.name.as_str()).collect();
    for s in &bp.services {
        for v in &s.env_vars {
            let key = v.key.as_deref().unwrap_or("fromGroup");
            if let Some(g) = &v.from_group
                && !groups.contains(g.as_str())
            {
                problems.push(format!("{}: fromGroup {g} is not defined", s.name));
            }
            if let Some(db) = &v.from_database
                && !bp.databases.iter().any(|d| d.name == db.name)
            {
                problems.push(format!(
                    "{}: {key} reads database {}, which is not defined",
                    s.name, db.name
                ));
            }
            let Some(from) = &v.from_service else {
                continue;
            };
            let Some(target) = bp.service(&from.name) else {
                problems.push(format!(
                    "{}: {key} reads service {}, which is not defined",
                    s.name, from.name
                ));
                continue;
            };
            if target.kind != from.kind {
                problems.push(format!(
                    "{}: {key} names {} as {:?}, but it is {:?}",
                    s.name, from.name, from.kind, target.kind
                ));
            }
            if target.runtime == Some(Runtime::Static) {
                problems.push(format!(
                    "{}: {key} reads static site {}, which has no address on the private network",
                    s.name, from.name
                ));
            }
            if target.name == s.name {
                problems.push(format!("{}: {key} reads the service itself", s.name));
            }
            if let Some(p) = from.property {
                let ok = match target.kind {
                    ServiceType::Keyvalue | ServiceType::Redis => true,
                    ServiceType::Web | ServiceType::Pserv => p != ServiceProperty::ConnectionString,
                    ServiceType::Worker | ServiceType::Cron => false,
                };
                if !ok {
                    problems.push(format!(
                        "{}: {key} asks {} for {p:?}, which a {:?} does not have",
                        s.name, from.name, target.kind
                    ));
                }
            }
            if let Some(k) = &from.env_var_key
                && target.var(k).is_none()
            {
                problems.push(format!(
                    "{}: {key} copies {k} from {}, which does not set it",
                    s.name, from.name
                ));
            }
        }
    }
    problems
}

/// The secrets of the original runbook: set by hand (`sync: false`) where
/// they are defined, copied (`fromService … envVarKey`) elsewhere, never a
/// value in the file. `generated` lists those Render may generate instead.
pub fn check_secrets(bp: &Blueprint, secrets: &[&str], generated: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for secret in secrets {
        let mut defined = false;
        for s in &bp.services {
            let Some(v) = s.var(secret) else { continue };
            match v.source() {
                Ok(Source::Prompted) => defined = true,
                Ok(Source::Generated) if generated.contains(secret) => defined = true,
                Ok(Source::ServiceVar(..)) => {}
                _ => problems.push(format!(
                    "{}: {secret} must be `sync: false` (or copied with fromService envVarKey)",
                    s.name
                )),
            }
        }
        for g in &bp.env_var_groups {
            if g.env_vars.iter().any(|v| v.key.as_deref() == Some(*secret)) {
                problems.push(format!("group {}: {secret} must not be in a group", g.name));
            }
        }
        if !defined {
            problems.push(format!(
                "{secret} is not set by hand (`sync: false`) on any service"
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Commands: the parts of a shell command line the checks need.

/// One simple command of a command line (`a && b` is two): the variables it
/// assigns before the program, the program, its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleCommand {
    pub assigns: Vec<String>,
    pub program: String,
    pub args: Vec<String>,
}

/// Splits a command line on `&&` and `;`, then into words (quotes kept
/// together), skipping `NAME=value` prefixes and `exec`.
pub fn simple_commands(line: &str) -> Vec<SimpleCommand> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    let flush = |words: &mut Vec<String>, out: &mut Vec<SimpleCommand>| {
        let mut assigns = Vec::new();
        let mut rest = std::mem::take(words).into_iter().peekable();
        while let Some(w) = rest.peek() {
            match w.split_once('=') {
                Some((name, _))
                    if !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    assigns.push(name.to_owned());
                    rest.next();
                }
                _ => break,
            }
        }
        if rest.peek().map(String::as_str) == Some("exec") {
            rest.next();
        }
        if let Some(program) = rest.next() {
            out.push(SimpleCommand {
                assigns,
                program,
                args: rest.collect(),
            });
        }
    };
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None => match c {
                '"' | '\'' => {
                    quote = Some(c);
                    in_word = true;
                }
                ' ' | '\t' | '\n' => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                ';' => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                    flush(&mut words, &mut out);
                }
                '&' if chars.peek() == Some(&'&') => {
                    chars.next();
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                    flush(&mut words, &mut out);
                }
                '>' => {
                    // A redirection: the rest of this command writes a file.
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                _ => {
                    word.push(c);
                    in_word = true;
                }
            },
        }
    }
    if in_word {
        words.push(word);
    }
    flush(&mut words, &mut out);
    out
}

/// Names of the variables a command line expands (`$NAME`, `${NAME}`).
pub fn expanded_vars(line: &str) -> BTreeSet<String> {
    let re = Regex::new(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)").expect("regex");
    re.captures_iter(line).map(|c| c[1].to_owned()).collect()
}

/// Subcommands (or the values of the first positional argument) from a
/// clap `--help` text; empty when it takes none.
pub fn help_subcommands(help: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_commands = false;
    let mut in_values = false;
    for line in help.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            let t = line.trim_start();
            if line.starts_with("  ") && !t.is_empty() {
                if let Some(name) = t.split_whitespace().next()
                    && name != "help"
                {
                    out.insert(name.to_owned());
                }
            } else {
                in_commands = false;
            }
        }
        // `--help` with documented values: "Possible values:" then "- name: …".
        if line.trim() == "Possible values:" {
            in_values = true;
            continue;
        }
        if in_values {
            match line.trim().strip_prefix("- ") {
                Some(item) => {
                    let name = item.split([':', ' ']).next().unwrap_or_default();
                    out.insert(name.to_owned());
                }
                None if line.trim().is_empty() => {}
                None => in_values = false,
            }
        }
        if let Some((_, values)) = line.split_once("[possible values: ") {
            for v in values.trim_end().trim_end_matches(']').split(',') {
                out.insert(v.trim().to_owned());
            }
        }
    }
    out
}

/// Where a start command's binaries are: a path under `target/release/`.
pub const RELEASE_DIR: &str = "target/release/";

/// Each Rust service's commands name, in `target/release/`, a binary of the
/// workspace that its own `buildCommand` builds, and a subcommand that
/// binary has. `bins` maps each binary to its subcommands (from `--help`).
pub fn check_commands(bp: &Blueprint, bins: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    for s in bp.services.iter().filter(|s| s.runs_our_code()) {
        let built: BTreeSet<String> = s
            .build_command
            .as_deref()
            .map(simple_commands)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.program == "cargo")
            .flat_map(|c| {
                c.args
                    .windows(2)
                    .filter(|w| w[0] == "--bin")
                    .map(|w| w[1].clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        for b in &built {
            if !bins.contains_key(b) {
                problems.push(format!(
                    "{}: buildCommand builds {b}, which is not a binary of the workspace",
                    s.name
                ));
            }
        }
        if s.start_command.is_none() {
            problems.push(format!("{}: no startCommand", s.name));
        }
        for line in [s.pre_deploy_command.as_deref(), s.start_command.as_deref()]
            .into_iter()
            .flatten()
        {
            for c in simple_commands(line) {
                let Some(bin) = c.program.strip_prefix(RELEASE_DIR) else {
                    problems.push(format!(
                        "{}: `{}` is not a binary under {RELEASE_DIR}",
                        s.name, c.program
                    ));
                    continue;
                };
                let Some(subcommands) = bins.get(bin) else {
                    problems.push(format!(
                        "{}: {bin} is not a binary of the workspace",
                        s.name
                    ));
                    continue;
                };
                if !built.contains(bin) {
                    problems.push(format!("{}: its buildCommand does not build {bin}", s.name));
                }
                match c.args.first() {
                    Some(sub) if !subcommands.contains(sub) => problems.push(format!(
                        "{}: {bin} has no subcommand {sub} (it has: {})",
                        s.name,
                        subcommands.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                    None if !subcommands.is_empty() => problems.push(format!(
                        "{}: {bin} is started without naming one of its subcommands ({}) ",
                        s.name,
                        subcommands.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                    _ => {}
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Variables: what the code reads, what the README documents, what the
// blueprint wires.

/// Variables a source file reads: through the `platform::Env` readers
/// (`env.required("X")`, `env.or("X", …)`, helpers taking `(env, "X")`),
/// `std::env::var("X")`, clap's `env = "X"`, and the libraries' own
/// (`EnvFilter::…from_default_env` reads `RUST_LOG`, `FailScenario::setup`
/// reads `FAILPOINTS`). Comment lines and a file's `#[cfg(test)] mod` are
/// not read.
pub fn env_reads(source: &str) -> BTreeSet<String> {
    let code = match Regex::new(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s")
        .expect("regex")
        .find(source)
    {
        Some(m) => &source[..m.start()],
        None => source,
    };
    // Comments name variables too; only code reads them.
    let code = Regex::new(r"(?m)^\s*//.*$")
        .expect("regex")
        .replace_all(code, "");
    let code = code.as_ref();
    let name = r#""([A-Z][A-Z0-9_]*)""#;
    let patterns = [
        format!(
            r"\.\s*(?:required|optional|or|at_least_one_or|duration_or|secret|secret_min_len|strong_secret|optional_strong_secret|list|raw)\s*(?:::<[^>]*>)?\s*\(\s*{name}"
        ),
        format!(r"\(\s*env\s*,\s*{name}"),
        format!(r"\bvar(?:_os)?\s*\(\s*{name}"),
        format!(r"\benv\s*=\s*{name}"),
    ];
    let mut out = BTreeSet::new();
    for p in &patterns {
        let re = Regex::new(p).expect("regex");
        out.extend(re.captures_iter(code).map(|c| c[1].to_owned()));
    }
    if code.contains("from_default_env") {
        out.insert("RUST_LOG".to_owned());
    }
    if code.contains("FailScenario::setup") {
        out.insert("FAILPOINTS".to_owned());
    }
    out
}

/// One row of the README's Configuration table.
#[derive(Debug, Clone)]
pub struct DocRow {
    pub names: Vec<String>,
    pub used_by: String,
    pub default: String,
    pub text: String,
}

/// The rows of the README's table whose header is
/// `| variable | used by | default | meaning |`.
pub fn readme_rows(readme: &str) -> Vec<DocRow> {
    let mut rows = Vec::new();
    let mut in_table = false;
    let name = Regex::new(r"`([A-Z][A-Z0-9_]*)`").expect("regex");
    for line in readme.lines() {
        if line.starts_with("| variable | used by | default |") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        if !line.starts_with('|') {
            if !rows.is_empty() {
                break;
            }
            continue;
        }
        if line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        if cells.len() < 4 {
            continue;
        }
        rows.push(DocRow {
            names: name
                .captures_iter(cells[0])
                .map(|c| c[1].to_owned())
                .collect(),
            used_by: cells[1].to_owned(),
            default: cells[2].to_owned(),
            text: line.to_owned(),
        });
    }
    rows
}

/// The processes a deploy runs: a variable one of them requires must be
/// wired; one that only tools, tests or one-off commands read need not be.
pub const DEPLOYED: &[&str] = &[
    "api",
    "relay",
    "tg-delivery",
    "inbound",
    "authz-fanout",
    "alerts",
    "tg-adapter",
    "migrate",
    "every",
];

/// The processes a service runs, by the names the README's "used by"
/// column gives them: `fastprep-consumers <process>` is that process,
/// `fastprep-api serve` the api, `fastprep-migrate` migrate.
pub fn processes(s: &Service) -> Vec<String> {
    let mut out = Vec::new();
    for line in [s.pre_deploy_command.as_deref(), s.start_command.as_deref()]
        .into_iter()
        .flatten()
    {
        for c in simple_commands(line) {
            let bin = c.program.rsplit('/').next().unwrap_or_default();
            let name = match (bin, c.args.first()) {
                ("fastprep-consumers", Some(process)) => process.clone(),
                ("fastprep-broker", _) => continue,
                _ => bin.trim_start_matches("fastprep-").to_owned(),
            };
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Variables of the system itself, not the project's to document.
pub const SYSTEM_VARS: &[&str] = &["PATH", "HOME", "CARGO_HOME"];

/// Variables Render itself reads from a service's environment.
pub const RENDER_VARS: &[&str] = &["NODE_VERSION"];

/// Whether a "used by" cell names a deployed process in a clause without a
/// condition: `tg-adapter; api … without S3` names the adapter
/// unconditionally; `tg-adapter with \`TG_BACKEND=mtproto\`` only under a
/// condition the blueprint may not meet.
fn used_by_deployed(used_by: &str) -> bool {
    used_by.split(';').any(|clause| {
        let words: Vec<&str> = clause
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .collect();
        !words.iter().any(|w| *w == "with" || *w == "without")
            && words.iter().any(|w| DEPLOYED.contains(w))
    })
}

/// Every variable the code reads is documented in the README table (or
/// covered by a `PREFIX_*` there), and wired in the blueprint unless the
/// table says it is optional or only tools and tests read it; the table
/// lists nothing the code does not read; the blueprint wires nothing that
/// neither the code nor the service's own commands read; and every variable
/// a command expands is set on that service.
pub fn check_env(bp: &Blueprint, reads: &BTreeSet<String>, rows: &[DocRow]) -> Vec<String> {
    let mut problems = Vec::new();
    let documented: BTreeMap<&str, &DocRow> = rows
        .iter()
        .flat_map(|r| r.names.iter().map(move |n| (n.as_str(), r)))
        .collect();
    let wildcard = Regex::new(r"`([A-Z][A-Z0-9_]*_)\*`").expect("regex");
    let prefixes: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            wildcard
                .captures_iter(&r.text)
                .map(|c| c[1].to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let wired: BTreeSet<&str> = bp
        .services
        .iter()
        .filter(|s| s.runs_our_code())
        .flat_map(|s| {
            s.keys().chain(
                s.commands()
                    .flat_map(simple_commands)
                    .flat_map(|c| c.assigns)
                    .filter_map(|a| reads.get(&a).map(String::as_str))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    for var in reads {
        if SYSTEM_VARS.contains(&var.as_str()) {
            continue;
        }
        match documented.get(var.as_str()) {
            Some(row) => {
                let required = row.default.trim_start().starts_with("required");
                if required && used_by_deployed(&row.used_by) && !wired.contains(var.as_str()) {
                    problems.push(format!(
                        "{var} is required by a deployed process (README: {}) but render.yaml does not wire it",
                        row.used_by.trim()
                    ));
                }
            }
            None if prefixes.iter().any(|p| var.starts_with(p.as_str())) => {}
            None => problems.push(format!(
                "{var} is read by the code but not in the README's Configuration table"
            )),
        }
    }
    // Per service: what a deployed process requires is wired on the
    // service that runs it.
    for s in bp.services.iter().filter(|s| s.runs_our_code()) {
        let processes = processes(s);
        let wired_here: BTreeSet<String> = s
            .keys()
            .map(str::to_owned)
            .chain(
                s.commands()
                    .flat_map(simple_commands)
                    .flat_map(|c| c.assigns),
            )
            .collect();
        for row in rows {
            if !row.default.trim_start().starts_with("required") {
                continue;
            }
            let needs = row.used_by.split(';').any(|clause| {
                let words: Vec<&str> = clause
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .collect();
                !words.iter().any(|w| *w == "with" || *w == "without")
                    && words.iter().any(|w| processes.iter().any(|p| p == w))
            });
            for name in row.names.iter().filter(|_| needs) {
                if !wired_here.contains(name) {
                    problems.push(format!(
                        "{} runs {}, which requires {name} (README), but the service does not set it",
                        s.name,
                        processes.join(" and ")
                    ));
                }
            }
        }
    }
    for name in documented.keys() {
        if !reads.contains(*name) {
            problems.push(format!(
                "the README's Configuration table lists {name}, which no code reads"
            ));
        }
    }
    for s in &bp.services {
        let expanded: BTreeSet<String> = s.commands().flat_map(expanded_vars).collect();
        let keys: BTreeSet<&str> = s.keys().collect();
        for e in &expanded {
            if !keys.contains(e.as_str()) {
                problems.push(format!(
                    "{}: its commands expand ${e}, which the service does not set",
                    s.name
                ));
            }
        }
        if !s.runs_our_code() && s.runtime != Some(Runtime::Static) {
            continue; // an image reads its own variables
        }
        for k in &keys {
            if !reads.contains(*k) && !expanded.contains(*k) && !RENDER_VARS.contains(k) {
                problems.push(format!(
                    "{}: sets {k}, which neither the code nor its commands read",
                    s.name
                ));
            }
        }
    }
    problems
}
