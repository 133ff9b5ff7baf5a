//! Alerts: rules on the daemon's metrics ("ccbt_connected_peers < 1 for 30 s, warning"), kept as
//! records in the store (`alert/<name>`), checked every second. A rule whose condition has held
//! for its duration fires: one log line, and it shows in the API and the dashboard until the
//! condition stops holding (one more line).

use super::Daemon;
use crate::bail;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// A metric name as `/metrics` prints it (for example `ccbt_download_rate_bytes_per_second`).
    pub metric: String,
    /// `>`, `>=`, `<`, `<=`, `==` or `!=`.
    pub op: String,
    pub threshold: f64,
    /// How long the condition must hold before the alert fires.
    #[serde(default)]
    pub for_secs: u64,
    /// `info`, `warning` or `critical`.
    #[serde(default = "warning")]
    pub severity: String,
}

fn warning() -> String {
    "warning".into()
}

impl Rule {
    pub fn check(&self) -> Result<()> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            bail!("an alert name is 1-64 letters, digits, '-', '_' or '.'");
        }
        if !self.metric.starts_with("ccbt_") || self.metric.len() > 128 {
            bail!(
                "{:?} is not one of the daemon's metrics (`ccbt metrics` lists them)",
                self.metric
            );
        }
        if !["<", "<=", ">", ">=", "==", "!="].contains(&self.op.as_str()) {
            bail!("op {:?}: use >, >=, <, <=, == or !=", self.op);
        }
        if !self.threshold.is_finite() {
            bail!("the threshold must be a number");
        }
        if !["info", "warning", "critical"].contains(&self.severity.as_str()) {
            bail!(
                "severity {:?}: use info, warning or critical",
                self.severity
            );
        }
        if self.for_secs > 7 * 86400 {
            bail!("for_secs is at most a week");
        }
        Ok(())
    }

    pub fn holds(&self, v: f64) -> bool {
        match self.op.as_str() {
            "<" => v < self.threshold,
            "<=" => v <= self.threshold,
            ">" => v > self.threshold,
            ">=" => v >= self.threshold,
            "==" => v == self.threshold,
            _ => v != self.threshold,
        }
    }
}

/// A rule and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertView {
    #[serde(flatten)]
    pub rule: Rule,
    /// "ok", "pending" (holding, not yet for long enough), "firing", or "no data".
    pub state: String,
    pub value: Option<f64>,
    /// Unix time it started firing.
    pub firing_since: Option<u64>,
}

/// A rule with (holding since, firing since as unix time, the last value seen).
type Tracked = (Rule, Option<Instant>, Option<u64>, Option<f64>);

#[derive(Default)]
pub struct Alerts {
    rules: std::sync::Mutex<BTreeMap<String, Tracked>>,
}

impl Alerts {
    pub fn load(store: &ccbt_cas::Store) -> Alerts {
        let a = Alerts::default();
        for (k, v) in store.daemon_records(b"alert/").unwrap_or_default() {
            match serde_json::from_slice::<Rule>(&v) {
                Ok(r) => {
                    a.rules
                        .lock()
                        .unwrap()
                        .insert(r.name.clone(), (r, None, None, None));
                }
                Err(e) => tracing::warn!(
                    "skipping a damaged alert rule {}: {e}",
                    String::from_utf8_lossy(&k)
                ),
            }
        }
        a
    }

    pub fn add(&self, store: &ccbt_cas::Store, r: Rule) -> Result<()> {
        r.check()?;
        store.put_daemon(
            format!("alert/{}", r.name).as_bytes(),
            &serde_json::to_vec(&r)?,
        )?;
        tracing::info!(
            "alert rule {} added: {} {} {} for {}s ({})",
            r.name,
            r.metric,
            r.op,
            r.threshold,
            r.for_secs,
            r.severity
        );
        self.rules
            .lock()
            .unwrap()
            .insert(r.name.clone(), (r, None, None, None));
        Ok(())
    }

    pub fn remove(&self, store: &ccbt_cas::Store, name: &str) -> Result<()> {
        if self.rules.lock().unwrap().remove(name).is_none() {
            return Err(crate::Error::NotFound(format!(
                "nothing with id {name} here: no such alert rule (`ccbt alerts list`)"
            )));
        }
        store.delete_daemon(format!("alert/{name}").as_bytes())?;
        Ok(())
    }

    pub fn list(&self) -> Vec<AlertView> {
        self.rules
            .lock()
            .unwrap()
            .values()
            .map(|(r, holding, firing, value)| AlertView {
                rule: r.clone(),
                state: match (value, firing, holding) {
                    (None, _, _) => "no data",
                    (_, Some(_), _) => "firing",
                    (_, None, Some(_)) => "pending",
                    _ => "ok",
                }
                .into(),
                value: *value,
                firing_since: *firing,
            })
            .collect()
    }

    /// Checks every rule against `values` (metric name to value) at `now`.
    pub fn evaluate(&self, values: &BTreeMap<String, f64>, now: Instant) {
        let unix = super::now_secs();
        for (r, holding, firing, value) in self.rules.lock().unwrap().values_mut() {
            *value = values.get(&r.metric).copied();
            let holds = value.is_some_and(|v| r.holds(v));
            if !holds {
                if firing.take().is_some() {
                    tracing::info!(
                        "alert {} resolved: {} = {}",
                        r.name,
                        r.metric,
                        value.map_or("no data".into(), |v| v.to_string())
                    );
                }
                *holding = None;
                continue;
            }
            let since = *holding.get_or_insert(now);
            if firing.is_none() && now.duration_since(since) >= Duration::from_secs(r.for_secs) {
                *firing = Some(unix);
                tracing::warn!(
                    "alert {} firing ({}): {} = {} {} {} for {}s",
                    r.name,
                    r.severity,
                    r.metric,
                    value.unwrap_or(f64::NAN),
                    r.op,
                    r.threshold,
                    r.for_secs
                );
            }
        }
    }
}

pub fn holds(r: &Rule, v: f64) -> bool {
    r.holds(v)
}

/// Metric values from the text format (samples without labels).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.split_once(' ')?;
            Some((name.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Checks the rules every second while the daemon runs.
pub async fn run(d: Arc<Daemon>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if d.alerts.list().is_empty() {
            continue;
        }
        let values = parse_metrics(&super::metrics::render(&d).await);
        d.alerts.evaluate(&values, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_after_its_duration_and_clears() {
        let a = Alerts::default();
        let r = Rule {
            name: "no-peers".into(),
            metric: "ccbt_connected_peers".into(),
            op: "<".into(),
            threshold: 1.0,
            for_secs: 5,
            severity: "warning".into(),
        };
        r.check().unwrap();
        a.rules
            .lock()
            .unwrap()
            .insert(r.name.clone(), (r, None, None, None));
        let t0 = Instant::now();
        let v = |x: f64| BTreeMap::from([("ccbt_connected_peers".to_string(), x)]);
        a.evaluate(&v(0.0), t0);
        assert_eq!(a.list()[0].state, "pending");
        a.evaluate(&v(0.0), t0 + Duration::from_secs(4));
        assert_eq!(a.list()[0].state, "pending");
        a.evaluate(&v(0.0), t0 + Duration::from_secs(5));
        assert_eq!(a.list()[0].state, "firing");
        a.evaluate(&v(3.0), t0 + Duration::from_secs(6));
        assert_eq!(a.list()[0].state, "ok");
        a.evaluate(&BTreeMap::new(), t0 + Duration::from_secs(7));
        assert_eq!(a.list()[0].state, "no data");
    }

    #[test]
    fn bad_rules_are_refused() {
        let ok = Rule {
            name: "x".into(),
            metric: "ccbt_torrents".into(),
            op: ">".into(),
            threshold: 0.0,
            for_secs: 0,
            severity: "info".into(),
        };
        ok.check().unwrap();
        for bad in [
            Rule {
                name: "../x".into(),
                ..ok.clone()
            },
            Rule {
                metric: "up".into(),
                ..ok.clone()
            },
            Rule {
                op: "~".into(),
                ..ok.clone()
            },
            Rule {
                threshold: f64::NAN,
                ..ok.clone()
            },
            Rule {
                severity: "loud".into(),
                ..ok.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metrics_text_is_read() {
        let m = parse_metrics("# HELP a b\nccbt_torrents 2\nccbt_x_total 5.5\nbad\n");
        assert_eq!(m["ccbt_torrents"], 2.0);
        assert_eq!(m["ccbt_x_total"], 5.5);
        assert_eq!(m.len(), 2);
    }
}
