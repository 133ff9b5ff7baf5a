//! The torrent's driver task: trackers, DHT, web seeds, dialing, rates, choking, checkpoints,
//! completion and shutdown. (A child of `session`, it uses the session's private items.)

use super::*;

/// The torrent's driver: peers, choking, rates, checkpoints, completion, shutdown.
pub(super) async fn drive(t: Arc<TorrentShared>, mut stop: watch::Receiver<bool>) {
    let (done_tx, done_rx) = watch::channel(t.state.lock().unwrap().picker.complete());
    let (quit_tx, quit_rx) = watch::channel(false);
    let mut trackers = Vec::new();
    if t.cfg.use_trackers {
        for url in t.meta.trackers.iter().flatten() {
            trackers.push(tokio::spawn(tracker_loop(
                t.clone(),
                url.clone(),
                done_rx.clone(),
                quit_rx.clone(),
            )));
        }
    }
    if t.cfg.use_web_seeds && !t.state.lock().unwrap().picker.complete() {
        let seeds = (t
            .meta
            .url_list
            .iter()
            .map(|u| (u, webseed::Style::GetRight)))
        .chain(
            t.meta
                .http_seeds
                .iter()
                .map(|u| (u, webseed::Style::Hoffman)),
        );
        for (url, style) in seeds {
            if url.starts_with("http://") || url.starts_with("https://") {
                trackers.push(tokio::spawn(webseed::web_seed_loop(
                    t.clone(),
                    url.clone(),
                    style,
                    quit_rx.clone(),
                )));
            }
        }
    }
    if let (Some(d), false) = (t.session.discovery.get(), t.meta.private) {
        trackers.push(tokio::spawn(discovery::discovery_loop(
            t.clone(),
            d.clone(),
            quit_rx.clone(),
        )));
    }
    // Every 500 ms while there is work; every 15 s for a complete torrent with no peer (a daemon
    // holding a hundred idle torrents), all of them on the same 15 s grid so that they share
    // one wake-up of the runtime (at 2 s each, a hundred idle torrents were a hundred wake-ups
    // a second, most of an idle daemon's CPU). New peers and stops wake it at once either way.
    let mut idle = false;
    let started = Instant::now();
    let mut last_choke = Instant::now() - Duration::from_secs(60);
    let mut last_opt = Instant::now();
    let mut last_ckpt = Instant::now();
    let mut turn = 0u64;
    let mut completed_at: Option<Instant> = None;
    let mut last_rate = Instant::now();
    // The soonest a known peer's redial backoff ends (an idle driver wakes for it).
    let mut next_redial: Option<Instant> = None;
    loop {
        let until = if idle {
            let tick = idle_tick(Instant::now());
            next_redial.map_or(tick, |r| r.min(tick))
        } else {
            Instant::now() + Duration::from_millis(500)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            _ = stop.changed() => {}
            _ = t.wake.notified() => {}
        }
        if *stop.borrow() {
            break;
        }
        if let Some(e) = t.disk_error.lock().unwrap().clone() {
            tracing::error!("{}: stopping: {e}", t.meta.name);
            break;
        }
        // Rates from byte deltas over the time since the last update (a wake-up can come early).
        let dt = last_rate.elapsed().as_secs_f64().max(0.05);
        last_rate = Instant::now();
        let complete;
        let to_dial: Vec<SocketAddr>;
        next_redial = None;
        {
            let mut s = t.state.lock().unwrap();
            for p in s.peers.values_mut() {
                let dd = p.down_total - p.last_down;
                let du = p.up_total - p.last_up;
                p.last_down = p.down_total;
                p.last_up = p.up_total;
                p.down_rate = p.down_rate * 0.6 + (dd as f64 / dt) * 0.4;
                p.up_rate = p.up_rate * 0.6 + (du as f64 / dt) * 0.4;
            }
            complete = s.picker.complete();
            // Dial known peers we are not connected to, within the limit, with backoff. A peer
            // that dialed us is connected at its listen address too (from its extension
            // handshake): dialing that would only be dropped as a duplicate, again and again.
            let connected: HashSet<SocketAddr> = s
                .peers
                .values()
                .flat_map(|p| [Some(p.addr), p.reachable])
                .flatten()
                .collect();
            let room = t
                .max_peers
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(s.peers.len() + s.connecting.len());
            let now = Instant::now();
            let seed_only_told = complete && !t.cfg.swarm;
            let mut cands = Vec::new();
            for (a, (last, fails)) in &s.known {
                if connected.contains(a)
                    || s.connecting.contains(a)
                    || s.banned.contains(&a.ip())
                    || is_self(&t, *a)
                    // Seeds only dial the peers they were told about (some clients never
                    // dial loopback peers); the rest find us through trackers.
                    || (seed_only_told && !t.cfg.peers.contains(a))
                {
                    continue;
                }
                match last.map(|l| l + redial_after(*fails)) {
                    Some(due) if due > now => {
                        next_redial = Some(next_redial.map_or(due, |n| n.min(due)));
                    }
                    _ => cands.push(*a),
                }
            }
            cands.truncate(room);
            for a in &cands {
                s.connecting.insert(*a);
                if let Some(k) = s.known.get_mut(a) {
                    k.0 = Some(now);
                    k.1 += 1;
                }
            }
            to_dial = cands;
        }
        {
            let s = t.state.lock().unwrap();
            idle = complete
                && to_dial.is_empty()
                && s.peers.is_empty()
                && s.connecting.is_empty()
                && started.elapsed() >= Duration::from_secs(10);
        }
        for a in to_dial {
            tokio::spawn(connect_peer(t.clone(), a));
        }
        if last_choke.elapsed() >= Duration::from_secs(10)
            || started.elapsed() < Duration::from_secs(10)
        {
            let rotate = last_opt.elapsed() >= Duration::from_secs(30);
            if rotate {
                last_opt = Instant::now();
                turn += 1;
            }
            rechoke(&t, rotate, turn);
            last_choke = Instant::now();
        }
        if t.state.lock().unwrap().dirty && last_ckpt.elapsed() >= Duration::from_secs(1) {
            t.state.lock().unwrap().dirty = false;
            save_checkpoint(&t);
            last_ckpt = Instant::now();
        }
        if complete && completed_at.is_none() && !t.cfg.swarm {
            completed_at = Some(Instant::now());
            let _ = t.storage.create_all();
            let _ = t.storage.sync();
            save_checkpoint(&t);
            let _ = done_tx.send(true);
            if !t.cfg.seed {
                if !trackers.is_empty() {
                    // Let the trackers hear `completed` before we go.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                break;
            }
        }
        if complete {
            if let Some(r) = t.cfg.seed_ratio {
                let s = t.state.lock().unwrap();
                let base = t.meta.content_length().max(1) as f64;
                if s.uploaded as f64 / base >= r {
                    break;
                }
            }
        }
    }
    t.stopping.store(true, Ordering::Relaxed);
    {
        let s = t.state.lock().unwrap();
        for p in s.peers.values() {
            let _ = p.cmd.send(Cmd::Close);
        }
    }
    // Blocks still queued for the disk land before the last checkpoint (bounded: a peer task
    // stuck on its socket must not hold up the exit).
    for _ in 0..40 {
        if t.state.lock().unwrap().peers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.session.disk.drain(t.id).await;
    let _ = t.storage.sync();
    save_checkpoint(&t);
    // Trackers hear `stopped` (bounded: a dead tracker must not hold up the exit).
    let _ = quit_tx.send(true);
    for tr in trackers {
        let _ = tokio::time::timeout(Duration::from_secs(3), tr).await;
    }
}

/// How often an idle torrent's driver wakes (see [`drive`]).
const IDLE_TICK: Duration = Duration::from_secs(15);

/// The next point after `now` on the process-wide [`IDLE_TICK`] grid: every idle driver wakes
/// at the same instant, so the runtime wakes once for all of them.
fn idle_tick(now: Instant) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    let since = now.saturating_duration_since(epoch).as_millis() as u64;
    let step = IDLE_TICK.as_millis() as u64;
    epoch + Duration::from_millis((since / step + 1) * step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_drivers_share_their_wake_ups() {
        let t0 = Instant::now();
        let a = idle_tick(t0);
        let b = idle_tick(t0 + Duration::from_millis(3_700));
        let c = idle_tick(a);
        assert_eq!(
            a, b,
            "drivers that went idle at different times wake together"
        );
        assert!(a > t0 && a <= t0 + IDLE_TICK + Duration::from_millis(1));
        assert_eq!(
            c.duration_since(a),
            IDLE_TICK,
            "and the next tick is a whole period on"
        );
    }
}
