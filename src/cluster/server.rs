//! The controller listener: Raft messages from peer voters, calls from brokers.

use super::driver::MetadataNode;
use super::rpc::{self, ControllerRequest, ControllerResponse};
use futures::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use std::rc::Rc;

/// Connections the controller listener serves at once; more wait in the accept backlog.
const MAX_CONTROLLER_CONNECTIONS: usize = 1024;

pub async fn serve(node: Rc<MetadataNode>, listener: TcpListener) {
    let accepting = accept_connections(node.clone(), listener);
    futures::pin_mut!(accepting);
    let reloading = reload_tls(node);
    futures::pin_mut!(reloading);
    futures::future::select(accepting, reloading).await;
}

/// Checks the controller listener's TLS files every `ssl_reload_check_interval_ms` (and after
/// SIGHUP), as the Kafka listeners do: never on the accept path.
async fn reload_tls(node: Rc<MetadataNode>) {
    let Some(tls) = &node.controller_tls else {
        return futures::future::pending().await;
    };
    let interval = std::time::Duration::from_millis(node.config.ssl_reload_check_interval_ms);
    loop {
        glommio::timer::sleep(interval).await;
        match tls.acceptor.reload_if_changed() {
            Ok(false) => {}
            Ok(true) => tracing::info!("controller TLS certificates reloaded"),
            Err(error) => tracing::warn!(
                "controller TLS certificates not reloaded, the previous ones stay in use: {error}"
            ),
        }
    }
}

async fn accept_connections(node: Rc<MetadataNode>, listener: TcpListener) {
    let connections = Rc::new(glommio::sync::Semaphore::new(
        MAX_CONTROLLER_CONNECTIONS as u64,
    ));
    loop {
        let permit = match connections.acquire_static_permit(1).await {
            Ok(permit) => permit,
            Err(_) => return,
        };
        match listener.accept().await {
            Ok(stream) => {
                let node = node.clone();
                glommio::spawn_local(async move {
                    serve_connection(node, stream).await;
                    drop(permit);
                })
                .detach();
            }
            Err(error) => {
                tracing::warn!("controller listener accept failed: {error}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(node: Rc<MetadataNode>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(peer_address) = stream.peer_addr() else {
        return;
    };
    let peer = peer_address.to_string();
    let Some(tls) = &node.controller_tls else {
        serve_frames(&node, stream, &peer).await;
        return;
    };
    let timeout = std::time::Duration::from_millis(node.config.request_read_timeout_ms);
    let handshake = futures_rustls::TlsAcceptor::from(tls.acceptor.config()).accept(stream);
    let stream = match glommio::timer::timeout(timeout, async {
        handshake.await.map_err(glommio::GlommioError::IoError)
    })
    .await
    {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%peer, "closing controller connection: TLS handshake failed: {error}");
            return;
        }
    };
    let principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|certificate| crate::security::tls::certificate_principal(certificate));
    let Some(principal) = principal else {
        tracing::warn!(%peer, "closing controller connection: no usable client certificate");
        return;
    };
    if !may_reach_the_controller(&node, &principal, peer_address.ip()) {
        tracing::warn!(%peer, %principal,
            "closing controller connection: the principal lacks CLUSTER_ACTION on the cluster");
        return;
    }
    serve_frames(&node, stream, &peer).await;
}

/// With the authorizer on, only principals allowed CLUSTER_ACTION (brokers, as super users or
/// by ACL) may send Raft messages and controller calls: any certificate from the CA is not
/// enough, since client certificates may come from the same CA.
fn may_reach_the_controller(node: &MetadataNode, principal: &str, host: std::net::IpAddr) -> bool {
    use crate::security::acl::{self, Operation, ResourceType};
    if !node.config.authorizer_enabled {
        return true;
    }
    let policy = acl::Policy::from_config(&node.config);
    let who = acl::Requester { principal, host };
    node.image().acls.authorize(
        &policy,
        &who,
        Operation::ClusterAction,
        ResourceType::Cluster,
        acl::CLUSTER_NAME,
    )
}

async fn serve_frames<S>(node: &Rc<MetadataNode>, mut stream: S, peer: &str)
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    use protobuf::Message as _;
    let node = node.clone();
    loop {
        let frame = match rpc::read_frame(&mut stream).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%peer, "controller connection closed: {error}");
                return;
            }
        };
        match frame {
            (rpc::KIND_RAFT, body) => match super::quorum::RaftMessage::parse_from_bytes(&body) {
                Ok(message) => node.step(message),
                Err(error) => {
                    tracing::warn!(%peer, "closing controller connection: bad raft message: {error}");
                    return;
                }
            },
            (rpc::KIND_REQUEST, body) => {
                let response = match serde_json::from_slice::<ControllerRequest>(&body) {
                    Ok(request) => super::controller::handle(&node, request).await,
                    Err(error) => ControllerResponse::Error {
                        message: format!("malformed controller request: {error}"),
                    },
                };
                let payload = serde_json::to_vec(&response).expect("responses serialise");
                let mut frame = Vec::with_capacity(payload.len() + 5);
                rpc::encode_frame(&mut frame, rpc::KIND_RESPONSE, &payload);
                if stream.write_all(&frame).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
            (kind, _) => {
                tracing::warn!(%peer, kind, "closing controller connection: unknown frame kind");
                return;
            }
        }
    }
}
