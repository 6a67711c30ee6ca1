//! From the keys as read (`keys.rs`) to the [`Config`] the program uses: which role the file
//! describes, the rules that span keys or ask more than a type (URLs, lengths, one duration
//! longer than another), and the domain types (`NodeId`, `SocketAddr`). Every problem is
//! added to the reader's list; none stops the others from being found.

use std::ops::RangeBounds;
use std::path::Path;
use std::time::Duration;

use toml::Table;

use super::keys::{
    self, ControllerKeys, DefaultKeys, Files, HistoryKeys, ListenKeys, SmtpKeys, TlsKeys,
    TwilioKeys, ViewserverKeys, WebKeys, WorkerKeys,
};
use super::read::{Reader, valid_node_id};
use super::{
    Config, ControllerConfig, DefaultConfig, DeliveryConfig, DnsConfig, HistoryConfig,
    ListenConfig, MetaAlertConfig, Role, Secret, SmtpConfig, SmtpTls, TlsConfig, TwilioConfig,
    ViewserverConfig, WebConfig, WorkerConfig,
};
use crate::model::NodeId;

/// Whether `url` parses as an http or https URL.
fn is_http_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

impl Reader<'_> {
    pub(super) fn config(&mut self, table: &Table, path: &Path) -> Option<Config> {
        self.sections(table);
        let f = keys::read(self, table);
        let default = self.default_section(&f.default.keys);
        let role = self.role(&f);
        if let (Some(d), Some(r)) = (&default, &role) {
            self.credentials(d.password.is_some(), r);
        }
        let smtp = self.smtp(f.smtp.keys);
        let twilio = self.twilio(f.twilio.keys);
        let tls = f.tls.present.then(|| self.tls(f.tls.keys)).flatten();
        let history = self.history(f.history.keys);
        let web = self.web(f.web.keys, f.controller.present);
        let listen = self.listen(f.listen.keys);
        Some(Config {
            path: path.to_path_buf(),
            default: default?,
            role: role?,
            smtp,
            dns: DnsConfig {
                server: f.dns.keys.server,
            },
            twilio,
            tls,
            history,
            web,
            listen,
        })
    }

    /// Reports `key` when `value` is outside `range` (a bound beyond the type's).
    fn within(
        &mut self,
        key: &str,
        value: Duration,
        range: impl RangeBounds<Duration>,
        what: &str,
    ) {
        if !range.contains(&value) {
            self.problem(key.into(), format!("{value:?}"), what);
        }
    }

    /// Reports `key` as missing when nothing usable was set and it was not reported already.
    fn missing(&mut self, missing: bool, key: &str, found: &str, expected: &str) {
        if missing && !self.reported(key) {
            self.problem(key.into(), found, expected);
        }
    }

    /// Reports `key` when its secret value is set and not an http(s) URL.
    fn secret_url(&mut self, key: &str, url: &Option<Secret>, expected: &str) {
        if url.as_ref().is_some_and(|u| !is_http_url(u.expose())) {
            let found = "a value that is not an http(s) URL (value hidden)";
            self.problem(key.into(), found, expected);
        }
    }

    fn default_section(&mut self, k: &DefaultKeys) -> Option<DefaultConfig> {
        if let Some(p) = &k.password
            && p.expose().chars().count() < 16
        {
            self.problem(
                "default.password".into(),
                format!("a secret of {} characters", p.expose().chars().count()),
                "at least 16 characters",
            );
        }
        Some(DefaultConfig {
            password: k.password.clone(),
            debug: k.debug,
        })
    }

    /// Every node needs the cluster secret, except a worker given its own node key instead.
    fn credentials(&mut self, password: bool, role: &Role) {
        let key = match role {
            Role::Worker { worker, .. } => worker.key.is_some(),
            Role::Viewserver(_) => false,
        };
        match (password, key) {
            (false, false) => {
                let expected = match role {
                    Role::Viewserver(_) => {
                        "the cluster secret shared by every node (at least 16 characters)"
                    }
                    Role::Worker { .. } => {
                        "the cluster secret shared by every node (at least 16 characters), or, on a probe-only worker, its node key as worker.key"
                    }
                };
                self.missing(true, "default.password", "nothing", expected);
            }
            (true, true) => self.problem(
                "worker.key".into(),
                "both default.password and worker.key",
                "one of them: the cluster secret, or only this worker's node key",
            ),
            _ => {}
        }
    }

    fn role(&mut self, f: &Files) -> Option<Role> {
        let worker_role = f.worker.present || f.controller.present;
        match (worker_role, f.viewserver.present) {
            (true, true) => {
                self.problem(
                    "viewserver".into(),
                    "both [viewserver] and [worker]/[controller] in one file".to_string(),
                    "one role per file: a viewserver file or a worker file",
                );
                None
            }
            (false, false) => {
                self.problem(
                    "worker".into(),
                    "neither [worker] nor [viewserver]".to_string(),
                    "one role per file: [viewserver] for a viewserver node, [worker] (with [controller] when it may become controller) for a worker node",
                );
                None
            }
            (true, false) => {
                if !f.worker.present {
                    self.problem(
                        "worker".into(),
                        "[controller] without [worker]".to_string(),
                        "a [worker] section: a controller is a worker that may be elected",
                    );
                    return None;
                }
                let worker = self.worker(&f.worker.keys);
                let controller = if f.controller.present {
                    let paid = f.twilio.keys.max_per_hour;
                    Some(self.controller(&f.controller.keys, paid)?)
                } else {
                    None
                };
                Some(Role::Worker {
                    worker: worker?,
                    controller,
                })
            }
            (false, true) => Some(Role::Viewserver(self.viewserver(&f.viewserver.keys)?)),
        }
    }

    /// `paid_max_per_hour` is `[twilio] max_per_hour`, the cap the outbox applies.
    fn controller(
        &mut self,
        k: &ControllerKeys,
        paid_max_per_hour: u32,
    ) -> Option<ControllerConfig> {
        let addr = k.addr;
        let advertise_addr = match &k.advertise_addr {
            Some(a) => a.clone(),
            None if addr.ip().is_unspecified() => {
                self.problem(
                    "controller.advertise_addr".into(),
                    "nothing".to_string(),
                    format!("the address workers reach this controller at (controller.addr {:?} listens on every interface)", addr.to_string()),
                );
                addr.to_string()
            }
            None => addr.to_string(),
        };
        self.databases(k);
        self.secret_url(
            "controller.heartbeat_url",
            &k.heartbeat_url,
            "the URL a dead man's switch service gave you, like \"https://hc-ping.com/<uuid>\"",
        );
        let hb = k.heartbeat_interval;
        self.within(
            "controller.heartbeat_interval",
            hb,
            Duration::from_millis(100)..=Duration::from_secs(3600),
            "from 100ms to 1h",
        );
        let meta = self.meta_alerts(k);
        let day = Duration::from_secs(86_400);
        self.within(
            "controller.flap_window",
            k.flap_window,
            Duration::from_secs(1)..=7 * day,
            "from 1s to 7 days",
        );
        Some(ControllerConfig {
            meta,
            flap: crate::policy::flap::FlapRule {
                flips: k.flap_flips,
                window_ms: k.flap_window.as_millis() as i64,
            },
            addr,
            advertise_addr,
            database: k.database.clone(),
            confirmations: k.confirmations,
            reload_period: k.reload_period,
            assignment_timeout: k.assignment_timeout,
            delivery: DeliveryConfig {
                attempts: k.delivery_attempts,
                backoff: k.delivery_backoff,
                backoff_max: k.delivery_backoff_max,
                timeout: k.delivery_timeout,
                concurrency: k.delivery_concurrency,
                admin_interval: k.admin_interval,
                storm: self.storm(k),
                paid_max_per_hour,
            },
            heartbeat_url: k.heartbeat_url.clone(),
            heartbeat_interval: hb,
            distinct_locations: k.distinct_locations,
            metrics_per_worker: k.metrics_per_worker,
        })
    }

    /// `storm_flips`, `storm_window`, `storm_wait`.
    fn storm(&mut self, k: &ControllerKeys) -> crate::policy::storm::StormRule {
        let (window, wait) = (k.storm_window, k.storm_wait);
        self.within(
            "controller.storm_window",
            window,
            Duration::from_secs(1)..=Duration::from_secs(86_400),
            "from 1s to 1 day",
        );
        self.within(
            "controller.storm_wait",
            wait,
            ..=Duration::from_secs(600),
            "from 0s to 10m",
        );
        crate::policy::storm::StormRule {
            flips: k.storm_flips,
            window_ms: window.as_millis() as i64,
            wait_ms: wait.as_millis() as i64,
        }
    }

    /// `[controller] database`: at least one URL, each one mysql_async accepts.
    fn databases(&mut self, k: &ControllerKeys) {
        self.missing(
            k.database.is_empty(),
            "controller.database",
            "an empty list",
            "at least one MySQL URL like \"mysql://user:password@host:3306/gobearmon\"",
        );
        for (i, dsn) in k.database.iter().enumerate() {
            if let Err(why) = mysql_async::Opts::from_url(dsn.expose()) {
                let kind = match why {
                    mysql_async::UrlError::UnsupportedScheme { .. } => "an unsupported URL scheme",
                    mysql_async::UrlError::Parse(_) => "an unparsable URL",
                    _ => "an invalid URL",
                };
                self.problem(
                    format!("controller.database[{i}]"),
                    format!("{kind} (value hidden)"),
                    "a URL like \"mysql://user:password@host:3306/gobearmon\"",
                );
            }
        }
    }

    /// The meta-alert keys of `[controller]`.
    fn meta_alerts(&mut self, k: &ControllerKeys) -> MetaAlertConfig {
        self.secret_url(
            "controller.admin_webhook",
            &k.admin_webhook,
            "the http(s) URL that receives the meta-alerts as JSON",
        );
        MetaAlertConfig {
            admin_webhook: k.admin_webhook.clone(),
            admin_webhook_secret: k.admin_webhook_secret.clone(),
            no_controller: k.no_controller_alert,
            stale_worker: k.stale_worker_alert,
            outbox_stuck: k.outbox_stuck_alert,
            viewserver_down: k.viewserver_down_alert,
            db_down: k.db_down_alert,
        }
    }

    fn worker(&mut self, k: &WorkerKeys) -> Option<WorkerConfig> {
        self.missing(
            k.id.is_none(),
            "worker.id",
            "nothing",
            "a stable node id such as \"w1\"",
        );
        if let Some(id) = &k.id
            && !valid_node_id(id)
        {
            self.problem(
                "worker.id".into(),
                format!("{id:?}"),
                "1 to 64 characters from A-Z a-z 0-9 . _ -",
            );
        }
        self.missing(
            k.view_addr.is_empty(),
            "worker.view_addr",
            "nothing",
            "the viewserver group members, like [\"vs1:7000\", \"vs2:7000\", \"vs3:7000\"]",
        );
        let hb = k.heartbeat_interval;
        if k.lease <= hb {
            self.problem(
                "worker.lease".into(),
                format!("{:?}", k.lease),
                format!("longer than worker.heartbeat_interval ({hb:?})"),
            );
        }
        if let Some(key) = &k.key
            && crate::rpc::sign::parse_node_key(key).is_err()
        {
            self.problem(
                "worker.key".into(),
                format!("a value of {} characters", key.expose().chars().count()),
                "64 hex digits, as printed by `gobearmon node-key ID --config FILE`",
            );
        }
        for (i, url) in k.canaries.iter().enumerate() {
            if let Err(e) = crate::canary::parse(url) {
                self.problem(
                    format!("worker.canaries[{i}]"),
                    format!("{:?}: {}", e.url, e.why),
                    "tcp://host:port, http(s)://..., icmp://host or dns://server/name",
                );
            }
        }
        if let Some(t) = &k.metrics_token {
            let n = t.expose().chars().count();
            if n < 16 {
                self.problem(
                    "worker.metrics_token".into(),
                    format!("a token of {n} characters (value hidden)"),
                    "at least 16 characters",
                );
            }
        }
        self.within(
            "worker.canary_interval",
            k.canary_interval,
            Duration::from_millis(200)..,
            "at least 200ms",
        );
        Some(WorkerConfig {
            id: NodeId(k.id.clone()?),
            location: k.location.clone(),
            view_addr: k.view_addr.clone(),
            num_threads: k.num_threads,
            addr: k.addr,
            heartbeat_interval: hb,
            lease: k.lease,
            result_buffer: k.result_buffer,
            disconnect_pause: k.disconnect_pause,
            key: k.key.clone(),
            canaries: k.canaries.clone(),
            canary_interval: k.canary_interval,
            metrics_token: k.metrics_token.clone(),
        })
    }

    fn viewserver(&mut self, k: &ViewserverKeys) -> Option<ViewserverConfig> {
        let n = k.peers.len();
        if ![1, 3, 5].contains(&n) {
            self.problem(
                "viewserver.peers".into(),
                format!("{n} member(s)"),
                "1, 3 or 5 members, this node included",
            );
        } else if k.id as usize > n {
            self.problem(
                "viewserver.id".into(),
                k.id.to_string(),
                format!("this node's position in viewserver.peers (1 to {n})"),
            );
        }
        if k.raft_election_timeout <= k.raft_heartbeat * 2 {
            self.problem(
                "viewserver.raft_election_timeout".into(),
                format!("{:?}", k.raft_election_timeout),
                format!(
                    "more than twice viewserver.raft_heartbeat ({:?})",
                    k.raft_heartbeat
                ),
            );
        }
        Some(ViewserverConfig {
            id: k.id,
            addr: k.addr,
            peers: k.peers.clone(),
            data_dir: k.data_dir.clone(),
            controller: k.controller.clone(),
            controller_timeout: k.controller_timeout,
            raft_heartbeat: k.raft_heartbeat,
            raft_election_timeout: k.raft_election_timeout,
        })
    }

    fn smtp(&mut self, k: SmtpKeys) -> SmtpConfig {
        let tls = match k.tls {
            Some(tls) => tls,
            None if k.port == 465 => SmtpTls::Tls,
            None => SmtpTls::Auto,
        };
        if k.ca.is_some() && tls == SmtpTls::None {
            self.problem(
                "smtp.ca".into(),
                "a CA with smtp.tls = \"none\"".to_string(),
                "smtp.tls \"auto\", \"starttls\" or \"tls\", or no smtp.ca",
            );
        }
        SmtpConfig {
            host: k.host,
            port: k.port,
            from: k.from,
            username: k.username,
            password: k.password,
            admin: k.admin,
            tls,
            ca: k.ca,
            timeout: k.timeout,
        }
    }

    fn twilio(&mut self, k: TwilioKeys) -> TwilioConfig {
        if !is_http_url(&k.base_url) {
            self.problem(
                "twilio.base_url".into(),
                format!("{:?}", k.base_url),
                "an http:// or https:// URL",
            );
        }
        TwilioConfig {
            account_sid: k.account_sid,
            auth_token: k.auth_token,
            from: k.from,
            base_url: k.base_url.trim_end_matches('/').to_string(),
            max_per_hour: k.max_per_hour,
        }
    }

    fn history(&mut self, k: HistoryKeys) -> HistoryConfig {
        // Raw rows are rolled up an hour and some minutes after they were written; a shorter
        // retention would prune them first (the pruning waits for the roll-up instead).
        self.within(
            "history.raw_retention",
            k.raw_retention,
            Duration::from_secs(2 * 3600)..,
            "at least 2 hours (\"2h\"), so raw results are rolled up before they are pruned",
        );
        HistoryConfig {
            enabled: k.enabled,
            raw_retention: k.raw_retention,
            rollup_retention: k.rollup_retention,
        }
    }

    fn listen(&mut self, k: ListenKeys) -> ListenConfig {
        let at_least = |r: &mut Self, key: &str, v: Duration, min: Duration| {
            r.within(key, v, min.., &format!("at least {min:?}"));
        };
        at_least(
            self,
            "listen.head_timeout",
            k.head_timeout,
            Duration::from_millis(100),
        );
        at_least(
            self,
            "listen.idle_timeout",
            k.idle_timeout,
            Duration::from_secs(1),
        );
        at_least(
            self,
            "listen.body_timeout",
            k.body_timeout,
            Duration::from_millis(100),
        );
        ListenConfig::from(k)
    }

    fn web(&mut self, k: WebKeys, controller: bool) -> WebConfig {
        if k.addr.is_some() && !controller {
            self.problem(
                "web.addr".into(),
                "an API address on a node without [controller]".to_string(),
                "a [controller] section (the API reads the database), or no web.addr",
            );
        }
        self.missing(
            k.addr.is_some() && k.api_tokens.is_empty(),
            "web.api_tokens",
            "nothing",
            "at least one bearer token (16 characters or more) when web.addr is set",
        );
        for (i, t) in k.api_tokens.iter().enumerate() {
            let n = t.expose().chars().count();
            if n < 16 {
                self.problem(
                    format!("web.api_tokens[{i}]"),
                    format!("a token of {n} characters (value hidden)"),
                    "at least 16 characters",
                );
            }
        }
        if let Some(u) = &k.public_url
            && !is_http_url(u)
        {
            self.problem(
                "web.public_url".into(),
                format!("{u:?}"),
                "an http:// or https:// URL (the base of the push URLs printed)",
            );
        }
        WebConfig {
            addr: k.addr,
            api_tokens: k.api_tokens,
            public_url: k.public_url,
        }
    }

    fn tls(&mut self, k: TlsKeys) -> Option<TlsConfig> {
        self.missing(
            k.cert.is_none(),
            "tls.cert",
            "nothing",
            "a PEM certificate chain file",
        );
        self.missing(
            k.key.is_none(),
            "tls.key",
            "nothing",
            "a PEM private key file",
        );
        self.missing(
            k.ca.is_none(),
            "tls.ca",
            "nothing",
            "a PEM CA file that signs every node",
        );
        Some(TlsConfig {
            cert: k.cert?,
            key: k.key?,
            ca: k.ca?,
        })
    }
}
