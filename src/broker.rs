//! The embedded MQTT broker of `wearcast up`: one process, no broker to install. Real
//! deployments may point the gateway at Mosquitto, EMQX or HiveMQ instead.
//!
//! The broker itself is rumqttd, listening on a private loopback port. Devices reach it
//! through an access guard on the public address, because rumqttd 0.20 can check a
//! password but has no topic ACLs. The guard reads each client's packets (the broker's
//! replies pass through untouched) and enforces the same rules as the Mosquitto files
//! that `wearcast device export-mosquitto` writes (`wearcast_server::devices`):
//!
//! - **CONNECT**: a user name and password are checked against Wearcast's MQTT users
//!   (`wearcast device password|gateway-password`); a wrong one is answered with
//!   CONNACK "bad user name or password". Without credentials a client is refused
//!   ("not authorised") unless anonymous clients are allowed: by default only when the
//!   broker listens on a loopback address, like Mosquitto 2's local-only mode
//!   (`[broker] allow_anonymous` decides otherwise). Anonymous clients are not
//!   restricted: on loopback they are the operator's own tools.
//! - A device may publish only on `wearcast/v1/<tenant>/<machine>/...` (its last will
//!   included) and subscribe to nothing; a gateway user may subscribe under
//!   `wearcast/v1/` (shared subscriptions too) and publish nothing. A client that tries
//!   anything else is disconnected at once, as AWS IoT does; nothing it sent after its
//!   last allowed packet reaches the broker.
//! - The guard puts the user name in front of an authenticated client's id
//!   (`m-001:<id>`), so no device can take over another device's or a gateway's
//!   session by reusing its client id.
//!
//! Every refusal is logged (user, client id, topic; never the password) and counted in
//! `wearcast_mqtt_refused_total{reason}`; accepted connections in
//! `wearcast_mqtt_connections_total{user}` (`device`, `gateway`, `anonymous`). The
//! in-process gateway of `wearcast up` connects to the broker's private port directly.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self, PacketType, Protocol};
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, Event, MqttOptions, Packet, Publish, Subscribe,
};
use rumqttd::{Broker, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, error, warn};
use wearcast_server::devices::MqttUser;
use wearcast_server::store::Store;
use wearcast_server::tls::{TlsConfig, handshake};

/// Numbers the sessions of authenticated clients that connect with an empty client id.
static NEXT_AUTO_ID: AtomicU64 = AtomicU64::new(1);

/// How long a new connection has to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The embedded broker, started; devices may connect once [`Self::guard`] runs.
pub struct EmbeddedBroker {
    /// The public address, bound but not yet accepting.
    listener: TcpListener,
    /// rumqttd's private loopback address.
    inner: SocketAddr,
    /// The one user rumqttd accepts: the guard and the clients in this process.
    inner_login: (String, String),
    max_payload_bytes: usize,
}

/// Who the guard lets in, and what it lets them do.
pub struct Access {
    pub store: Store,
    /// `None`: anonymous clients only when the public address is a loopback one.
    pub allow_anonymous: Option<bool>,
    /// MQTT over TLS only (`mqtts://`), with this certificate and key.
    pub tls: Option<TlsConfig>,
}

impl EmbeddedBroker {
    /// Where devices connect.
    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where in-process clients (the gateway of `wearcast up`) connect, past the guard.
    pub fn inner(&self) -> SocketAddr {
        self.inner
    }

    /// The user name and password rumqttd wants on its private port: a random one per
    /// run, never written anywhere, so another local process cannot use that port to
    /// go around the guard.
    pub fn inner_login(&self) -> (String, String) {
        self.inner_login.clone()
    }

    /// Starts accepting devices on the public address, through the access guard (and
    /// TLS, when configured). Returns whether anonymous clients are let in.
    pub fn guard(self, access: Access) -> anyhow::Result<bool> {
        let public = self.address();
        let anonymous = access
            .allow_anonymous
            .unwrap_or_else(|| public.ip().is_loopback());
        // No ALPN: MQTT clients rarely offer it, and one offered is not required.
        let tls = access
            .tls
            .as_ref()
            .map(|t| wearcast_server::tls::acceptor(t, &[]))
            .transpose()
            .map_err(|e| anyhow::anyhow!("broker.tls: {e}"))?;
        self.listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let guard = Arc::new(Guard {
            store: access.store,
            allow_anonymous: anonymous,
            inner: self.inner,
            inner_login: self.inner_login.clone(),
            // The payload plus room for the topic and headers.
            max_packet_bytes: self.max_payload_bytes + 64 * 1024,
        });
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let guard = guard.clone();
                        match &tls {
                            Some(acceptor) => {
                                let acceptor = acceptor.clone();
                                tokio::spawn(async move {
                                    if let Some(stream) =
                                        handshake(&acceptor, stream, peer, "mqtt").await
                                    {
                                        guard.serve(stream, peer).await;
                                    }
                                });
                            }
                            None => {
                                tokio::spawn(guard.serve(stream, peer));
                            }
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors, typically: wait rather than spin.
                        warn!(error = %e, "the MQTT guard cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(anonymous)
    }
}

/// Starts rumqttd on a private loopback port and binds the public address `listen`
/// (port 0 picks a free port); returns once the broker completes an MQTT handshake.
pub async fn start_embedded(
    listen: &str,
    max_payload_bytes: usize,
) -> anyhow::Result<EmbeddedBroker> {
    let requested: SocketAddr = listen
        .parse()
        .with_context(|| format!("`{listen}` is not an address like 127.0.0.1:1883"))?;
    // Bind the public address first so a taken port is a clear error here.
    let listener = TcpListener::bind(requested).map_err(|e| {
        anyhow::anyhow!(
            "the embedded MQTT broker cannot listen on {requested}: {e}. Another broker \
             (Mosquitto?) may be running there: pass --mqtt-listen ADDR to run the embedded \
             broker elsewhere, or --mqtt-url mqtt://HOST:PORT to use that broker instead"
        )
    })?;
    let inner = {
        let probe = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
        probe.local_addr()?
    };
    let inner_login = (
        "wearcast-internal".to_string(),
        wearcast_server::devices::new_password(),
    );

    let mut v4 = HashMap::new();
    v4.insert(
        "1".to_string(),
        ServerSettings {
            name: "wearcast-mqtt".into(),
            listen: inner,
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: max_payload_bytes,
                max_inflight_count: 500,
                auth: Some(HashMap::from([inner_login.clone()])),
                external_auth: None,
                dynamic_filters: true,
            },
        },
    );
    let config = rumqttd::Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            // The router's in-memory log per filter: room for a demo backfill that a
            // slow subscriber has not caught up with yet.
            max_segment_size: 64 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(v4),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .context("cannot start the broker thread")?;

    // A real CONNECT: a bare TCP probe makes the broker log a failed handshake.
    let mut options = MqttOptions::new("wearcast-up-probe", inner.ip().to_string(), inner.port());
    options
        .set_keep_alive(Duration::from_secs(5))
        .set_credentials(inner_login.0.clone(), inner_login.1.clone());
    let (client, mut events) = AsyncClient::new(options, 4);
    let handshake = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::ConnAck(_))) => return,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .is_err()
    {
        bail!("the embedded MQTT broker did not accept connections on {inner} within 10 s");
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while !matches!(
            events.poll().await,
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_)
        ) {}
    })
    .await;
    Ok(EmbeddedBroker {
        listener,
        inner,
        inner_login,
        max_payload_bytes,
    })
}

struct Guard {
    store: Store,
    allow_anonymous: bool,
    inner: SocketAddr,
    inner_login: (String, String),
    max_packet_bytes: usize,
}

/// Why the guard refused or ended a connection (the `reason` label).
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// Unknown user, or the wrong password.
    BadCredentials,
    /// No credentials where they are required.
    Anonymous,
    /// A last will on a topic the user may not publish.
    WillDenied,
    PublishDenied,
    SubscribeDenied,
    /// Not MQTT 3.1.1, a packet that does not parse, a second CONNECT, or no CONNECT
    /// in time.
    Malformed,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::BadCredentials => "bad_credentials",
            Self::Anonymous => "anonymous",
            Self::WillDenied => "will_denied",
            Self::PublishDenied => "publish_denied",
            Self::SubscribeDenied => "subscribe_denied",
            Self::Malformed => "malformed",
        }
    }
}

fn refused(reason: Refusal) {
    metrics::counter!("wearcast_mqtt_refused_total", "reason" => reason.label()).increment(1);
}

/// Untrusted text (user names, client ids, topics) as it goes into a log line: at
/// most 100 characters, quoted, with control characters escaped.
fn shown(text: &str) -> String {
    let mut cut: String = text.chars().take(100).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Reads one whole MQTT frame into `buf` and splits it off; `None` when the peer
/// closed the connection.
async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<BytesMut>, Refusal> {
    loop {
        match mqttbytes::check(buf.iter(), max) {
            Ok(header) => return Ok(Some(buf.split_to(header.frame_length()))),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(_) => return Err(Refusal::Malformed),
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

impl Guard {
    async fn serve<S>(self: Arc<Self>, mut client: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let first = tokio::time::timeout(
            CONNECT_TIMEOUT,
            read_frame(&mut client, &mut buf, self.max_packet_bytes),
        )
        .await;
        let frame = match first {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return,
            Ok(Err(_)) | Err(_) => {
                debug!(%peer, "MQTT client sent no valid CONNECT; closed");
                refused(Refusal::Malformed);
                return;
            }
        };
        let mut frame = frame;
        let Ok(Packet::Connect(mut connect)) = Packet::read(&mut frame, self.max_packet_bytes)
        else {
            debug!(%peer, "MQTT client's first packet is not an MQTT 3.1.1 CONNECT; closed");
            refused(Refusal::Malformed);
            return;
        };
        if !matches!(connect.protocol, Protocol::V4) {
            debug!(%peer, "MQTT client refused: not MQTT 3.1.1");
            refused(Refusal::Malformed);
            connack(&mut client, ConnectReturnCode::RefusedProtocolVersion).await;
            return;
        }
        let user = match connect.login.take() {
            Some(login) => match self.store.mqtt_user(&login.username).await {
                Ok(Some(user))
                    if wearcast_server::devices::verify(&login.password, &user.password_hash) =>
                {
                    Some(user)
                }
                Ok(_) => {
                    warn!(%peer, user = %shown(&login.username), client_id = %shown(&connect.client_id),
                        "MQTT client refused: unknown user or wrong password");
                    refused(Refusal::BadCredentials);
                    connack(&mut client, ConnectReturnCode::BadUserNamePassword).await;
                    return;
                }
                Err(e) => {
                    error!(%peer, error = %e, "cannot look up an MQTT user; connection refused");
                    connack(&mut client, ConnectReturnCode::ServiceUnavailable).await;
                    return;
                }
            },
            None if self.allow_anonymous => None,
            None => {
                warn!(%peer, client_id = %shown(&connect.client_id),
                    "MQTT client refused: no user name and password (wearcast device password)");
                refused(Refusal::Anonymous);
                connack(&mut client, ConnectReturnCode::NotAuthorized).await;
                return;
            }
        };
        if let (Some(user), Some(will)) = (&user, &connect.last_will)
            && !user.may_publish(&will.topic)
        {
            warn!(%peer, user = %user.username, topic = %shown(&will.topic),
                "MQTT client refused: its last will is on a topic it may not publish");
            refused(Refusal::WillDenied);
            connack(&mut client, ConnectReturnCode::NotAuthorized).await;
            return;
        }
        if connect.keep_alive == 0 {
            warn!(%peer, client_id = %shown(&connect.client_id),
                "MQTT client refused: a keep-alive of 0 is not supported; set one (e.g. 60 s)");
            refused(Refusal::Malformed);
            connack(&mut client, ConnectReturnCode::ServiceUnavailable).await;
            return;
        }
        // Every client's session lives under its user's name (`*anon` for anonymous
        // ones), so nobody can take over another user's session by reusing its id.
        let id = if connect.client_id.is_empty() {
            if !connect.clean_session {
                // MQTT 3.1.1: an empty id is for a clean session only.
                refused(Refusal::Malformed);
                connack(&mut client, ConnectReturnCode::BadClientId).await;
                return;
            }
            format!("auto-{}", NEXT_AUTO_ID.fetch_add(1, Ordering::Relaxed))
        } else {
            std::mem::take(&mut connect.client_id)
        };
        let owner = user.as_ref().map_or("*anon", |u| u.username.as_str());
        connect.client_id = format!("{owner}:{id}");
        let (inner_user, inner_password) = self.inner_login.clone();
        connect.set_login(inner_user, inner_password);
        let kind = match &user {
            Some(u) if u.device.is_some() => "device",
            Some(_) => "gateway",
            None => "anonymous",
        };
        let mut out = BytesMut::new();
        if connect.write(&mut out).is_err() {
            refused(Refusal::Malformed);
            return;
        }
        let mut broker = match TcpStream::connect(self.inner).await {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "the MQTT guard cannot reach the embedded broker");
                connack(&mut client, ConnectReturnCode::ServiceUnavailable).await;
                return;
            }
        };
        let _ = broker.set_nodelay(true);
        if broker.write_all(&out).await.is_err() {
            return;
        }
        metrics::counter!("wearcast_mqtt_connections_total", "user" => kind).increment(1);
        debug!(%peer, client_id = %shown(&connect.client_id), user = kind, "MQTT client connected through the guard");

        let (mut broker_rd, mut broker_wr) = broker.into_split();
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        // The broker's side passes through untouched.
        let mut down = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut broker_rd, &mut client_wr).await;
            let _ = client_wr.shutdown().await;
        });
        let max = self.max_packet_bytes;
        let up = async move {
            loop {
                let frame = match read_frame(&mut client_rd, &mut buf, max).await {
                    Ok(Some(frame)) => frame.freeze(),
                    Ok(None) => return Ok(()),
                    Err(refusal) => return Err((refusal, String::new())),
                };
                if let Some(user) = &user {
                    check(user, &frame, max)?;
                }
                if broker_wr.write_all(&frame).await.is_err() {
                    return Ok(());
                }
            }
        };
        let outcome = tokio::select! {
            outcome = up => outcome,
            _ = &mut down => Ok(()),
        };
        down.abort();
        if let Err((refusal, topic)) = outcome {
            warn!(%peer, client_id = %shown(&connect.client_id), topic = %shown(&topic), reason = refusal.label(),
                "MQTT client disconnected: it broke its access rules");
            refused(refusal);
        }
    }
}

/// Whether `user` may send `frame` (one whole MQTT packet); the refusal and the topic
/// or filter at fault when not.
fn check(user: &MqttUser, frame: &Bytes, max: usize) -> Result<(), (Refusal, String)> {
    let malformed = |_| (Refusal::Malformed, String::new());
    let header = mqttbytes::check(frame.iter(), max).map_err(malformed)?;
    match header.packet_type().map_err(malformed)? {
        PacketType::Publish => {
            let publish = Publish::read(header, frame.clone()).map_err(malformed)?;
            if !user.may_publish(&publish.topic) {
                return Err((Refusal::PublishDenied, publish.topic));
            }
        }
        PacketType::Subscribe => {
            let subscribe = Subscribe::read(header, frame.clone()).map_err(malformed)?;
            if let Some(f) = subscribe
                .filters
                .iter()
                .find(|f| !user.may_subscribe(&f.path))
            {
                return Err((Refusal::SubscribeDenied, f.path.clone()));
            }
        }
        PacketType::Connect => return Err((Refusal::Malformed, String::new())),
        _ => {}
    }
    Ok(())
}

async fn connack(client: &mut (impl AsyncWrite + Unpin), code: ConnectReturnCode) {
    let mut out = BytesMut::new();
    if ConnAck::new(code, false).write(&mut out).is_ok() {
        let _ = client.write_all(&out).await;
        let _ = client.shutdown().await;
    }
}
