//! Access control, in front of every handler: [`guard`] turns a request into what it needs
//! ([`action::needs`]), finds out who is asking (htpasswd, or a bearer token from an external
//! token server), and lets the request through, or answers 401 `UNAUTHORIZED` with the
//! challenge, 403 `DENIED`, or 429 `TOOMANYREQUESTS`. A denied request changes nothing: it
//! never reaches a handler.
//!
//! With tokens, a request the token does not cover is answered as Distribution answers it:
//! 401 with a challenge naming the scope it needs and `error="insufficient_scope"`, so that
//! clients go back to the token server for it. 403 is for what the token covers and the
//! `access:` policy still forbids (the two are intersected), and for the admin right, which
//! only `access.admins` gives.
//!
//! Handlers see only the [`Caller`] (who, for the audit log, and what they may pull, to filter
//! listings), never credentials. Without an `auth` section the registry is open and every
//! caller may do everything, as before.

pub mod action;
pub mod htpasswd;
pub mod limit;
pub mod policy;
pub mod token;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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
use token::{Grants, TokenAuth};

/// How callers prove who they are.
#[derive(Debug)]
pub enum Authenticator {
    /// Basic auth against an htpasswd file.
    Htpasswd(Htpasswd),
    /// Bearer tokens from an external token server.
    Token(TokenAuth),
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

    /// The `WWW-Authenticate` value for a request that needs `needs`; with tokens it names the
    /// scope and, after a token was refused, why (`invalid_token`, `insufficient_scope`).
    fn challenge(&self, needs: &[Need], error: Option<&str>) -> String {
        let quote = |s: &str| s.replace(['"', '\\'], "");
        match &self.authenticator {
            Authenticator::Htpasswd(h) => format!("Basic realm=\"{}\"", quote(&h.realm)),
            Authenticator::Token(t) => {
                let mut c = format!("Bearer realm=\"{}\",service=\"{}\"", quote(&t.realm), quote(&t.service));
                let scope = scope(needs);
                if !scope.is_empty() {
                    c.push_str(&format!(",scope=\"{scope}\""));
                }
                if let Some(e) = error {
                    c.push_str(&format!(",error=\"{e}\""));
                }
                c
            }
        }
    }
}

/// The token scope `needs` asks for: `repository:NAME:ACTIONS` and `registry:catalog:*`,
/// space-separated as Distribution writes them.
fn scope(needs: &[Need]) -> String {
    let mut out: Vec<String> = Vec::new();
    for n in needs {
        match n {
            Need::Repository(name, actions) => {
                let a: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                out.push(format!("repository:{name}:{}", a.join(",")));
            }
            Need::MountSource(name) => out.push(format!("repository:{name}:pull")),
            Need::Catalog | Need::Listing => out.push("registry:catalog:*".to_owned()),
            Need::Admin => out.push("registry:admin:*".to_owned()),
            Need::Nothing | Need::Login => {}
        }
    }
    out.join(" ")
}

/// How a sign-in with a user name and password went (the web UI's sign-in form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// Signed in as this user.
    Ok(String),
    /// Wrong user name or password.
    Wrong,
    /// Too many wrong passwords from this address: try again in this many seconds.
    Blocked(u64),
    /// This registry signs users in through a token server, not with passwords.
    Unsupported,
}

impl Auth {
    /// Checks a user name and password as a request's Basic credentials are checked (the same
    /// cache, the same limit on wrong passwords per address).
    pub async fn sign_in(self: &Arc<Self>, user: &str, password: &str, ip: Option<IpAddr>) -> SignIn {
        if matches!(self.authenticator, Authenticator::Token(_)) {
            return SignIn::Unsupported;
        }
        if user.is_empty() {
            return SignIn::Wrong;
        }
        match identify(self, Credentials::Basic(user.to_owned(), password.to_owned()), ip).await {
            Identity::User(u) => SignIn::Ok(u),
            Identity::Blocked(wait) => SignIn::Blocked(wait.as_secs().max(1)),
            _ => SignIn::Wrong,
        }
    }

    /// A fingerprint of `user`'s password entry, if they can sign in with a password (see
    /// [`Htpasswd::fingerprint`]).
    pub fn user_fingerprint(&self, user: &str) -> Option<[u8; 32]> {
        match &self.authenticator {
            Authenticator::Htpasswd(h) => h.fingerprint(user),
            Authenticator::Token(_) => None,
        }
    }

    /// Whether users sign in through a token server (so not with a password here).
    pub fn signs_in_with_tokens(&self) -> bool {
        matches!(self.authenticator, Authenticator::Token(_))
    }

    /// The caller a signed-in `user` (or, with `None`, an anonymous visitor) is.
    pub fn caller_for(&self, user: Option<&str>) -> Caller {
        let rights = match (&self.policy, user) {
            (Some(p), _) => Rights::Policy(p.clone()),
            (None, Some(_)) => Rights::All,
            (None, None) => Rights::None,
        };
        Caller { user: user.map(str::to_owned), rights, token: None }
    }
}

/// Who made a request, and what they may do: what handlers get instead of credentials.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The signed-in user (a token's subject), if any.
    pub user: Option<String>,
    rights: Rights,
    /// What the caller's token grants, when tokens are the way in.
    token: Option<Arc<Grants>>,
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
        Caller { user: None, rights: Rights::All, token: None }
    }

    /// What the policy (not the token) lets the caller do in `repo`.
    fn by_policy(&self, repo: &RepoName) -> BTreeSet<Action> {
        match &self.rights {
            Rights::All => [Action::Pull, Action::Push, Action::Delete].into(),
            Rights::Policy(p) => p.allowed(self.user.as_deref(), repo),
            Rights::None => BTreeSet::new(),
        }
    }

    /// Whether the caller's token (if tokens are the way in) grants `action` in `repo`.
    fn by_token(&self, repo: &RepoName, action: Action) -> bool {
        self.token.as_ref().is_none_or(|g| g.allows(repo.as_str(), action))
    }

    /// Whether the caller may do `action` in `repo`.
    pub fn may(&self, repo: &RepoName, action: Action) -> bool {
        self.by_policy(repo).contains(&action) && self.by_token(repo, action)
    }

    /// What the caller may do in `repo`.
    pub fn allowed(&self, repo: &RepoName) -> BTreeSet<Action> {
        self.by_policy(repo).into_iter().filter(|a| self.by_token(repo, *a)).collect()
    }

    /// Whether a list of names (`_catalog`, `/api/repositories`) shows the repository named
    /// `name`: those the policy lets the caller pull. A token with `registry:catalog:*` sees
    /// the names as Distribution shows them, narrowed by the policy.
    pub fn may_pull(&self, name: &str) -> bool {
        name.parse::<RepoName>().is_ok_and(|n| self.by_policy(&n).contains(&Action::Pull))
    }

    /// Whether listings with more than names (usage, trash entries, the audit log) show the
    /// repository named `name`: to admins all, to others those they may pull, by the policy
    /// and, with tokens, by the token too.
    pub fn may_see(&self, name: &str) -> bool {
        self.is_admin() || name.parse::<RepoName>().is_ok_and(|n| self.may(&n, Action::Pull))
    }

    /// Whether the caller is an admin (repository deletes, restores, purges, GC). With tokens
    /// it takes `access.admins` and a token that grants `registry:admin:*` (so a token scoped
    /// to one repository never acts as an admin, whoever it was issued to).
    pub fn is_admin(&self) -> bool {
        let by_token = self.token.as_ref().is_none_or(|g| g.admin);
        by_token
            && match &self.rights {
                Rights::All => self.token.is_none(),
                Rights::Policy(p) => p.is_admin(self.user.as_deref()),
                Rights::None => false,
            }
    }

    fn signed_in(&self) -> bool {
        self.user.is_some() || self.token.is_some()
    }

    fn who(&self) -> &str {
        self.user.as_deref().unwrap_or("this token's holder")
    }
}

/// What a decision found missing.
enum Refusal {
    /// Not signed in (or signed in wrongly): 401 with the challenge.
    SignIn,
    /// The token does not cover the request: 401 with the challenge naming the scope.
    Scope,
    /// Signed in without the right: 403.
    Denied(String),
}

fn decide(auth: &Auth, caller: &Caller, needs: &[Need]) -> Result<(), Refusal> {
    let anonymous_ok = auth.policy.as_ref().is_some_and(|p| p.anonymous_anywhere());
    for need in needs {
        let (ok, token_short) = match need {
            Need::Nothing => (true, false),
            // `GET /v2/` always asks anonymous callers to sign in: clients learn the challenge
            // there, and those without credentials go on anonymously anyway.
            Need::Login => (caller.signed_in(), false),
            Need::Catalog | Need::Listing => match &caller.token {
                Some(g) => (g.catalog, !g.catalog),
                None => (caller.signed_in() || anonymous_ok, false),
            },
            Need::Repository(name, actions) => {
                (actions.iter().all(|a| caller.may(name, *a)), !actions.iter().all(|a| caller.by_token(name, *a)))
            }
            // Checked (and, when not given, turned into a plain upload) before the decision.
            Need::MountSource(_) => (true, false),
            Need::Admin => (caller.is_admin(), caller.token.as_ref().is_some_and(|g| !g.admin)),
        };
        if ok {
            continue;
        }
        if !caller.signed_in() {
            return Err(Refusal::SignIn);
        }
        if token_short {
            return Err(Refusal::Scope);
        }
        let what = match need {
            Need::Repository(name, actions) => {
                let a: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                format!("{} may not {} in {name}", caller.who(), a.join(" and "))
            }
            _ => format!("{} is not an admin of this registry", caller.who()),
        };
        return Err(Refusal::Denied(what));
    }
    Ok(())
}

/// The credentials of a request, if it carries any.
enum Credentials {
    Basic(String, String),
    Bearer(String),
    Malformed,
}

fn credentials(req: &Request) -> Option<Credentials> {
    let v = req.headers().get(axum::http::header::AUTHORIZATION)?;
    let Some((scheme, value)) = v.to_str().ok().and_then(|s| s.split_once(' ')) else {
        return Some(Credentials::Malformed);
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credentials::Bearer(value.trim().to_owned()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Some(Credentials::Malformed);
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok();
    match decoded.and_then(|d| String::from_utf8(d).ok()).as_deref().and_then(|s| s.split_once(':')) {
        // Clients without credentials still answer a Basic challenge, with empty ones
        // (containers/image does): that is no sign-in, not a failed one.
        Some(("", "")) => None,
        Some((u, p)) => Some(Credentials::Basic(u.to_owned(), p.to_owned())),
        None => Some(Credentials::Malformed),
    }
}

/// Who the credentials prove the caller to be.
enum Identity {
    /// An htpasswd user.
    User(String),
    /// A verified token.
    Token(Grants),
    /// Not a sign-in this registry takes (Basic credentials sent to a registry of tokens, as
    /// clients do before they learn the challenge; an `Authorization` it cannot read): asked to
    /// sign in, as Distribution asks.
    Ask,
    /// Refused: wrong password, unknown user, bad token.
    Failed { invalid_token: bool },
    /// Too many wrong passwords from this address lately: no password is checked for it.
    Blocked(std::time::Duration),
}

async fn identify(auth: &Arc<Auth>, creds: Credentials, ip: Option<IpAddr>) -> Identity {
    match (&auth.authenticator, creds) {
        (Authenticator::Htpasswd(h), Credentials::Basic(user, password)) => {
            if h.cached(&user, &password) {
                return Identity::User(user);
            }
            // Only password checks are limited: a verified password above still gets in.
            if let Some(wait) = ip.and_then(|ip| auth.limiter.blocked(ip, Instant::now())) {
                return Identity::Blocked(wait);
            }
            // A bcrypt check takes tens of milliseconds: not on an async thread.
            let (a, u) = (auth.clone(), user.clone());
            let ok = tokio::task::spawn_blocking(move || match &a.authenticator {
                Authenticator::Htpasswd(h) => h.verify(&u, &password),
                Authenticator::Token(_) => false,
            })
            .await
            .unwrap_or(false);
            if ok {
                return Identity::User(user);
            }
            if let Some(ip) = ip {
                auth.limiter.failed(ip, Instant::now());
            }
            Identity::Failed { invalid_token: false }
        }
        (Authenticator::Token(t), Credentials::Bearer(token)) if !token.is_empty() => {
            match t.verify(&token, SystemTime::now()) {
                Ok(grants) => Identity::Token(grants),
                Err(e) => {
                    tracing::info!(reason = %e, "bearer token refused");
                    Identity::Failed { invalid_token: true }
                }
            }
        }
        (Authenticator::Token(_), _) => Identity::Ask,
        (Authenticator::Htpasswd(_), Credentials::Bearer(_) | Credentials::Malformed) => {
            Identity::Failed { invalid_token: false }
        }
    }
}

/// `uri` without the `mount` and `from` query parameters: a plain upload.
fn without_mount(uri: &axum::http::Uri) -> Option<axum::http::Uri> {
    let query = uri.query().unwrap_or("");
    let kept: Vec<&str> =
        query.split('&').filter(|p| !p.is_empty() && !matches!(p.split('=').next(), Some("mount" | "from"))).collect();
    let path = uri.path();
    let pq = if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    axum::http::Uri::from_parts(parts).ok()
}

/// The middleware in front of every handler (see the module docs).
pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(auth) = st.auth.clone() else {
        req.extensions_mut().insert(Caller::open());
        return next.run(req).await;
    };
    // The web UI signs its users in with its own form and session; an `Authorization` header a
    // browser still sends for this host (a stale Basic login) must not get a challenge, which
    // would pop a password dialog, nor count as a wrong password.
    let ui = matches!(req.uri().path(), "/" | "/ui") || req.uri().path().starts_with("/ui/");
    if ui {
        // The UI builds its caller from the session, never from this.
        req.extensions_mut().insert(Caller { user: None, rights: Rights::None, token: None });
        return next.run(req).await;
    }
    let ip: Option<IpAddr> = req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0.addr.ip());
    let q: HashMap<String, String> = Query::try_from_uri(req.uri()).map(|q: Query<_>| q.0).unwrap_or_default();
    let mut needs = action::needs(req.method(), req.uri().path(), &q);
    let policy_rights = |signed_in: bool| match &auth.policy {
        Some(p) => Rights::Policy(p.clone()),
        None if signed_in => Rights::All,
        None => Rights::None,
    };
    let anonymous = Caller { user: None, rights: policy_rights(false), token: None };
    let caller = match credentials(&req) {
        None => anonymous,
        Some(creds) => match identify(&auth, creds, ip).await {
            Identity::User(u) => Caller { user: Some(u), rights: policy_rights(true), token: None },
            Identity::Token(g) => Caller {
                user: Some(g.subject.clone()).filter(|s| !s.is_empty()),
                rights: policy_rights(true),
                token: Some(Arc::new(g)),
            },
            Identity::Ask => {
                return ApiError::Unauthorized { challenge: auth.challenge(&needs, None) }.into_response();
            }
            Identity::Failed { invalid_token } => {
                let error = invalid_token.then_some("invalid_token");
                return ApiError::Unauthorized { challenge: auth.challenge(&needs, error) }.into_response();
            }
            Identity::Blocked(wait) => {
                return ApiError::TooManyRequests { retry_after: wait.as_secs().max(1) }.into_response();
            }
        },
    };
    // A mount from a repository the caller may not pull is no mount: the upload starts
    // plainly (202), as the spec has registries do when they cannot mount.
    if let Some(i) = needs.iter().position(|n| matches!(n, Need::MountSource(from) if !caller.may(from, Action::Pull)))
    {
        needs.remove(i);
        if let Some(uri) = without_mount(req.uri()) {
            *req.uri_mut() = uri;
        }
    }
    match decide(&auth, &caller, &needs) {
        Ok(()) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => {
            let error = match refusal {
                Refusal::SignIn => None,
                Refusal::Scope => Some("insufficient_scope"),
                Refusal::Denied(why) => return ApiError::Denied(why).into_response(),
            };
            ApiError::Unauthorized { challenge: auth.challenge(&needs, error) }.into_response()
        }
    }
}
