//! The controller listener: Raft messages from peer voters, calls from brokers.

use super::driver::MetadataNode;
use super::rpc::{self, ControllerRequest, ControllerResponse};
use futures::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use std::rc::Rc;

/// Connections the controller listener serves at once; more wait in the accept backlog.
const MAX_CONTROLLER_CONNECTIONS: usize = 1024;

pub async fn serve(node: Rc<MetadataNode>, listener: TcpListener) {
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

async fn serve_connection(node: Rc<MetadataNode>, mut stream: TcpStream) {
    use protobuf::Message as _;
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
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
                if stream.write_all(&frame).await.is_err() {
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
