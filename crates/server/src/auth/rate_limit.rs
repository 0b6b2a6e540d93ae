//! Login throttling (R-AUTH-5): attempts per client address and failures per account, in fixed
//! windows. State is per process: behind a load balancer each instance counts on its own.
use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, Duration, Utc};

pub struct LoginLimiter {
    per_ip: u32,
    per_email: u32,
    window: Duration,
    ips: Mutex<HashMap<String, Window>>,
    emails: Mutex<HashMap<String, Window>>,
}

#[derive(Clone, Copy)]
struct Window {
    started: DateTime<Utc>,
    count: u32,
}

impl LoginLimiter {
    pub fn new(per_ip: u32, per_email: u32, window_secs: i64) -> Self {
        Self {
            per_ip,
            per_email,
            window: Duration::seconds(window_secs),
            ips: Mutex::default(),
            emails: Mutex::default(),
        }
    }

    /// Counts one attempt from `ip` and checks that neither `ip` nor `email` is locked out.
    /// On refusal returns the seconds until the earliest window that blocks ends.
    pub fn check(&self, ip: &str, email: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let email_wait = self.wait(&self.emails, email, self.per_email, now);
        let ip_wait = {
            let mut ips = self.ips.lock().expect("limiter lock");
            if ips.len() > 100_000 {
                ips.retain(|_, w| now - w.started < self.window);
            }
            let w = ips.entry(ip.to_owned()).or_insert(Window { started: now, count: 0 });
            if now - w.started >= self.window {
                *w = Window { started: now, count: 0 };
            }
            w.count += 1;
            (w.count > self.per_ip).then(|| self.remaining(w, now))
        };
        match ip_wait.max(email_wait) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, email: &str, now: DateTime<Utc>) {
        let mut emails = self.emails.lock().expect("limiter lock");
        if emails.len() > 100_000 {
            emails.retain(|_, w| now - w.started < self.window);
        }
        let w = emails.entry(email.to_owned()).or_insert(Window { started: now, count: 0 });
        if now - w.started >= self.window {
            *w = Window { started: now, count: 0 };
        }
        w.count += 1;
    }

    pub fn record_success(&self, email: &str) {
        self.emails.lock().expect("limiter lock").remove(email);
    }

    fn wait(&self, map: &Mutex<HashMap<String, Window>>, key: &str, limit: u32, now: DateTime<Utc>) -> Option<u64> {
        let map = map.lock().expect("limiter lock");
        let w = map.get(key)?;
        (now - w.started < self.window && w.count >= limit).then(|| self.remaining(w, now))
    }

    fn remaining(&self, w: &Window, now: DateTime<Utc>) -> u64 {
        (w.started + self.window - now).num_seconds().max(1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_an_account_after_failures_until_the_window_ends() {
        let limiter = LoginLimiter::new(100, 3, 60);
        let t0 = Utc::now();
        for _ in 0..3 {
            assert!(limiter.check("1.1.1.1", "a@x.io", t0).is_ok());
            limiter.record_failure("a@x.io", t0);
        }
        let wait = limiter.check("2.2.2.2", "a@x.io", t0 + Duration::seconds(10)).unwrap_err();
        assert_eq!(wait, 50);
        assert!(limiter.check("2.2.2.2", "b@x.io", t0).is_ok(), "other accounts unaffected");
        assert!(limiter.check("2.2.2.2", "a@x.io", t0 + Duration::seconds(61)).is_ok());
    }

    #[test]
    fn limits_attempts_per_address() {
        let limiter = LoginLimiter::new(2, 100, 60);
        let t0 = Utc::now();
        assert!(limiter.check("ip", "a", t0).is_ok());
        assert!(limiter.check("ip", "b", t0).is_ok());
        assert!(limiter.check("ip", "c", t0).is_err());
        assert!(limiter.check("other", "c", t0).is_ok());
    }
}
