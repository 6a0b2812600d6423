//! Access control, in front of every handler: [`guard`] turns a request into what it needs
//! ([`action::needs`]), finds out who is asking (htpasswd; bearer tokens to come), and lets the
//! request through, or answers 401 `UNAUTHORIZED` with the challenge, 403 `DENIED`, or 429
//! `TOOMANYREQUESTS`. A denied request changes nothing: it never reaches a handler.
//!
//! Handlers see only the [`Caller`] (who, for the audit log, and what they may pull, to filter
//! listings), never credentials. Without an `auth` section the registry is open and every
//! caller may do everything, as before.

pub mod action;
pub mod htpasswd;
pub mod limit;
pub mod policy;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use berth_oci::RepoName;

use crate::AppState;
use crate::conn::Peer;
use crate::error::ApiError;
use action::{Action, Need};
use htpasswd::Htpasswd;
use limit::Limiter;
use policy::Policy;

/// How callers prove who they are.
#[derive(Debug)]
pub enum Authenticator {
    /// Basic auth against an htpasswd file.
    Htpasswd(Htpasswd),
}

/// The configured access control.
#[derive(Debug)]
pub struct Auth {
    authenticator: Authenticator,
    /// `None`: every signed-in user may do everything (Distribution's behaviour).
    policy: Option<Arc<Policy>>,
    limiter: Limiter,
}

impl Auth {
    /// Access control with `authenticator` and, if given, the `access:` policy.
    pub fn new(authenticator: Authenticator, policy: Option<Policy>) -> Auth {
        Auth { authenticator, policy: policy.map(Arc::new), limiter: Limiter::default() }
    }

    fn challenge(&self, _needs: &[Need]) -> String {
        match &self.authenticator {
            Authenticator::Htpasswd(h) => format!("Basic realm=\"{}\"", h.realm.replace('"', "")),
        }
    }
}

/// Who made a request, and what they may do: what handlers get instead of credentials.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The signed-in user, if any.
    pub user: Option<String>,
    rights: Rights,
}

#[derive(Debug, Clone)]
enum Rights {
    /// No access control, or a signed-in user without an `access:` section.
    All,
    /// As the policy says for this user.
    Policy(Arc<Policy>),
    /// Nothing (an anonymous caller without a policy).
    None,
}

impl Caller {
    /// A caller of an open registry: may do everything.
    pub fn open() -> Caller {
        Caller { user: None, rights: Rights::All }
    }

    /// Whether the caller may do `action` in `repo`.
    pub fn may(&self, repo: &RepoName, action: Action) -> bool {
        match &self.rights {
            Rights::All => true,
            Rights::Policy(p) => p.allowed(self.user.as_deref(), repo).contains(&action),
            Rights::None => false,
        }
    }

    /// What the caller may do in `repo`.
    pub fn allowed(&self, repo: &RepoName) -> BTreeSet<Action> {
        match &self.rights {
            Rights::All => [Action::Pull, Action::Push, Action::Delete].into(),
            Rights::Policy(p) => p.allowed(self.user.as_deref(), repo),
            Rights::None => BTreeSet::new(),
        }
    }

    /// Whether the caller may pull from the repository named `name` (listings show only those).
    pub fn may_pull(&self, name: &str) -> bool {
        name.parse::<RepoName>().is_ok_and(|n| self.may(&n, Action::Pull))
    }

    /// Whether the caller is an admin (repository deletes, restores, purges, GC).
    pub fn is_admin(&self) -> bool {
        match &self.rights {
            Rights::All => true,
            Rights::Policy(p) => p.is_admin(self.user.as_deref()),
            Rights::None => false,
        }
    }

    fn signed_in(&self) -> bool {
        self.user.is_some()
    }
}

/// What a decision found missing.
enum Refusal {
    /// Not signed in (or signed in wrongly): 401 with the challenge.
    SignIn,
    /// Signed in without the right: 403.
    Denied(String),
}

fn decide(auth: &Auth, caller: &Caller, needs: &[Need]) -> Result<(), Refusal> {
    let anonymous_ok = auth.policy.as_ref().is_some_and(|p| p.anonymous_anywhere());
    for need in needs {
        let ok = match need {
            Need::Nothing => true,
            // `GET /v2/` always asks anonymous callers to sign in: clients learn the challenge
            // there, and those without credentials go on anonymously anyway.
            Need::Login => caller.signed_in(),
            Need::Catalog | Need::Listing => caller.signed_in() || anonymous_ok,
            Need::Repository(name, actions) => actions.iter().all(|a| caller.may(name, *a)),
            Need::Admin => caller.is_admin(),
        };
        if !ok {
            if !caller.signed_in() {
                return Err(Refusal::SignIn);
            }
            let what = match need {
                Need::Repository(name, actions) => {
                    let a: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                    format!("{} may not {} in {name}", caller.user.as_deref().unwrap_or(""), a.join(" and "))
                }
                _ => format!("{} is not an admin of this registry", caller.user.as_deref().unwrap_or("")),
            };
            return Err(Refusal::Denied(what));
        }
    }
    Ok(())
}

/// The credentials of a request, if it carries any.
enum Credentials {
    Basic(String, String),
    Malformed,
}

fn credentials(req: &Request) -> Option<Credentials> {
    let v = req.headers().get(axum::http::header::AUTHORIZATION)?;
    let Some(b64) = v.to_str().ok().and_then(|s| s.strip_prefix("Basic ").or_else(|| s.strip_prefix("basic "))) else {
        return Some(Credentials::Malformed);
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok();
    match decoded.and_then(|d| String::from_utf8(d).ok()).as_deref().and_then(|s| s.split_once(':')) {
        // Clients without credentials still answer a Basic challenge, with empty ones
        // (containers/image does): that is no sign-in, not a failed one.
        Some(("", "")) => None,
        Some((u, p)) => Some(Credentials::Basic(u.to_owned(), p.to_owned())),
        None => Some(Credentials::Malformed),
    }
}

/// The middleware in front of every handler (see the module docs).
pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(auth) = st.auth.clone() else {
        req.extensions_mut().insert(Caller::open());
        return next.run(req).await;
    };
    let ip: Option<IpAddr> = req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0.addr.ip());
    if let Some(ip) = ip
        && let Some(wait) = auth.limiter.blocked(ip, Instant::now())
    {
        return ApiError::TooManyRequests { retry_after: wait.as_secs().max(1) }.into_response();
    }
    let q: HashMap<String, String> = Query::try_from_uri(req.uri()).map(|q: Query<_>| q.0).unwrap_or_default();
    let needs = action::needs(req.method(), req.uri().path(), &q);
    let anonymous = Caller {
        user: None,
        rights: match &auth.policy {
            Some(p) => Rights::Policy(p.clone()),
            None => Rights::None,
        },
    };
    let caller = match credentials(&req) {
        None => anonymous,
        Some(creds) => {
            let user = match (&auth.authenticator, creds) {
                (Authenticator::Htpasswd(h), Credentials::Basic(user, password)) => {
                    let ok = if h.cached(&user, &password) {
                        true
                    } else {
                        // A bcrypt check takes tens of milliseconds: not on an async thread.
                        let (a, u) = (auth.clone(), user.clone());
                        tokio::task::spawn_blocking(move || match &a.authenticator {
                            Authenticator::Htpasswd(h) => h.verify(&u, &password),
                        })
                        .await
                        .unwrap_or(false)
                    };
                    ok.then_some(user)
                }
                (_, Credentials::Malformed) => None,
            };
            match user {
                Some(u) => Caller {
                    user: Some(u),
                    rights: match &auth.policy {
                        Some(p) => Rights::Policy(p.clone()),
                        None => Rights::All,
                    },
                },
                None => {
                    if let Some(ip) = ip {
                        auth.limiter.failed(ip, Instant::now());
                    }
                    return ApiError::Unauthorized { challenge: auth.challenge(&needs) }.into_response();
                }
            }
        }
    };
    match decide(&auth, &caller, &needs) {
        Ok(()) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(Refusal::SignIn) => ApiError::Unauthorized { challenge: auth.challenge(&needs) }.into_response(),
        Err(Refusal::Denied(why)) => ApiError::Denied(why).into_response(),
    }
}
