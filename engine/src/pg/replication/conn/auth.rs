//! The session's start: the startup message (physical replication, or a
//! plain SQL session), authentication, and the parameters the server
//! reports up to `ReadyForQuery`.
//!
//! The server picks the method (trust, password, md5, SCRAM-SHA-256); the
//! client only refuses what would let an impostor through: skipping a
//! required channel binding, or ending SCRAM before the server's proof.
//! The password goes into the one message that carries it, and that
//! buffer is zeroed after it is sent.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use zeroize::Zeroize;

use super::messages::ServerMessage;
use super::{log_notice, protocol_error, server_error, Conn, Session};
use crate::pg::replication::conninfo::{ChannelBindingMode, ConnInfo};
use crate::pg::replication::wire::message_name;
use crate::{Error, Result};

impl Conn {
    /// The startup message, authentication, and the server's parameters up
    /// to `ReadyForQuery`.
    pub(crate) fn startup(&mut self, ci: &ConnInfo, session: Session) -> Result<()> {
        let second = match session {
            Session::Replication => ("replication", "true"),
            Session::Sql => ("database", ci.dbname.as_deref().unwrap_or("postgres")),
        };
        let params = [("user", ci.user.as_str()), second, ("application_name", ci.application_name.as_str())];
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut out)
            .map_err(|e| Error::Config(format!("connection parameters: {e}")))?;
        self.send(&out, "sending the startup message")?;
        self.authenticate(ci)?;
        loop {
            match self.recv(&|| "waiting for the server to accept the session".into())? {
                Message::ParameterStatus(p) => {
                    if p.name().ok() == Some("server_version") {
                        self.server_version = p.value().ok().map(str::to_owned);
                    }
                }
                Message::BackendKeyData(_) => {}
                Message::NoticeResponse(n) => log_notice(&self.server, n.fields()),
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(e) => return Err(server_error(&self.server, e.fields())),
                other => {
                    return Err(protocol_error(
                        &self.server,
                        format!("{} while waiting for ReadyForQuery", message_name(&other)),
                    ))
                }
            }
        }
    }

    fn authenticate(&mut self, ci: &ConnInfo) -> Result<()> {
        let server = self.server.clone();
        let no_password = || Error::AuthFailed {
            server: server.clone(),
            sqlstate: None,
            detail: format!(
                "the server asks for a password for user {:?} and none was given (set PGPASSWORD or a password file \
                 with PGPASSFILE)",
                ci.user
            ),
        };
        let auth_failed = |detail: String| Error::AuthFailed { server: server.clone(), sqlstate: None, detail };
        let mut scram: Option<ScramSha256> = None;
        let mut bound = false;
        let mut scram_done = false;
        loop {
            let mut out = BytesMut::new();
            match self.recv(&|| "authenticating".into())? {
                // libpq: with channel_binding=require, a server may not skip
                // the bound exchange (trust, md5...), or it could be anyone.
                Message::AuthenticationOk if ci.channel_binding == ChannelBindingMode::Require && !bound => {
                    return Err(auth_failed(
                        "channel_binding=require, but the server authenticated us without channel binding".into(),
                    ))
                }
                // The server's SCRAM proof is what authenticates the server:
                // it may not be skipped.
                Message::AuthenticationOk if scram.is_some() && !scram_done => {
                    return Err(auth_failed("the server ended SCRAM authentication without its proof".into()))
                }
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let pw = ci.password.as_ref().ok_or_else(no_password)?;
                    frontend::password_message(pw.expose().as_bytes(), &mut out)
                        .map_err(|_| auth_failed("the password contains a NUL byte".into()))?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = ci.password.as_ref().ok_or_else(no_password)?;
                    let mut hash = md5_hash(ci.user.as_bytes(), pw.expose().as_bytes(), body.salt());
                    let written = frontend::password_message(hash.as_bytes(), &mut out);
                    hash.zeroize();
                    written.map_err(|_| auth_failed("the password contains a NUL byte".into()))?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = Vec::new();
                    let mut it = body.mechanisms();
                    while let Some(m) =
                        it.next().map_err(|e| protocol_error(&server, format!("SASL mechanisms: {e}")))?
                    {
                        mechanisms.push(m.to_owned());
                    }
                    let (mechanism, binding) = self.sasl_mechanism(ci, &mechanisms).map_err(auth_failed)?;
                    let pw = ci.password.as_ref().ok_or_else(no_password)?;
                    let s = ScramSha256::new(pw.expose().as_bytes(), binding);
                    frontend::sasl_initial_response(mechanism, s.message(), &mut out)
                        .map_err(|e| protocol_error(&server, format!("SASL initial response: {e}")))?;
                    bound = mechanism == "SCRAM-SHA-256-PLUS";
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol_error(&server, "SASL continuation without a SASL exchange"))?;
                    s.update(body.data()).map_err(|e| auth_failed(format!("SCRAM: the server's challenge: {e}")))?;
                    frontend::sasl_response(s.message(), &mut out)
                        .map_err(|e| protocol_error(&server, format!("SASL response: {e}")))?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol_error(&server, "SASL final message without a SASL exchange"))?;
                    // Checks the server's signature: a server that does not
                    // know the password cannot forge it.
                    s.finish(body.data()).map_err(|e| auth_failed(format!("SCRAM: the server's proof: {e}")))?;
                    scram_done = true;
                    continue;
                }
                Message::ErrorResponse(body) => {
                    let m = ServerMessage::parse(body.fields());
                    return Err(if m.sqlstate.starts_with("28") {
                        Error::AuthFailed { server, sqlstate: Some(m.sqlstate), detail: m.message }
                    } else {
                        m.into_error(&server)
                    });
                }
                Message::NoticeResponse(n) => {
                    log_notice(&server, n.fields());
                    continue;
                }
                Message::AuthenticationGss
                | Message::AuthenticationGssContinue(_)
                | Message::AuthenticationSspi
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential => {
                    return Err(auth_failed(
                        "the server asks for GSSAPI/SSPI/Kerberos authentication, which cairn does not support; \
                         use scram-sha-256, md5 or password in pg_hba.conf"
                            .into(),
                    ))
                }
                other => {
                    return Err(protocol_error(&server, format!("{} during authentication", message_name(&other))))
                }
            }
            let sent = self.send(&out, "authenticating");
            out[..].zeroize();
            sent?;
        }
    }

    /// The SASL mechanism and channel binding to use, from what the server
    /// offers and `channel_binding`; `Err` says why authentication cannot
    /// go on.
    fn sasl_mechanism(
        &self,
        ci: &ConnInfo,
        mechanisms: &[String],
    ) -> std::result::Result<(&'static str, ChannelBinding), String> {
        let offered = |m: &str| mechanisms.iter().any(|o| o == m);
        let plus = offered("SCRAM-SHA-256-PLUS");
        // As libpq: bind when both sides can; say "y" (we could, the server
        // did not offer) over TLS so that a server stripped of the -PLUS
        // offer refuses; "n" otherwise.
        let chosen = match (ci.channel_binding, plus, &self.channel_binding) {
            (ChannelBindingMode::Disable, _, _) => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
            (_, true, Some(data)) => ("SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(data.clone())),
            (ChannelBindingMode::Require, _, _) => {
                return Err(format!(
                    "channel_binding=require, but {}",
                    if !self.tls {
                        "the connection is not encrypted (TLS is needed for channel binding)"
                    } else if !plus {
                        "the server does not offer SCRAM-SHA-256-PLUS"
                    } else {
                        "the server certificate's signature algorithm has no tls-server-end-point hash"
                    }
                ))
            }
            (ChannelBindingMode::Prefer, false, Some(_)) => ("SCRAM-SHA-256", ChannelBinding::unrequested()),
            (ChannelBindingMode::Prefer, _, _) => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
        };
        if !offered(chosen.0) {
            return Err(format!("the server offers only SASL mechanisms {mechanisms:?}; cairn speaks SCRAM-SHA-256"));
        }
        Ok(chosen)
    }
}
