//! The agent's service endpoints (api-docs/agent/service): register
//! (`PUT /v1/agent/service/register`), deregister
//! (`PUT /v1/agent/service/deregister/:id`) and read one service
//! (`GET /v1/agent/service/:id`, 404 when the agent does not know it — after
//! an agent restart that lost a dynamically registered service, say).
//!
//! [`ServiceRegistration`] serializes to the documented request body
//! (PascalCase keys, `ID`, Go duration strings). Nothing is rejected here;
//! the agent's answer is the judge, and a non-2xx answer becomes a
//! [`ConsulError::Status`] quoting it.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Serialize;

use super::{Client, ConsulError, success_body};

/// Longest an agent call may take (they answer at once).
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A service definition as `PUT /v1/agent/service/register` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    /// `connect-proxy` for a sidecar; absent for a typical service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    /// Empty: the agent's node address.
    pub address: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyDestination>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<AgentCheck>,
}

/// The `Proxy` block of a `connect-proxy` registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyDestination {
    pub destination_service_name: String,
    #[serde(rename = "DestinationServiceID")]
    pub destination_service_id: String,
    pub local_service_address: String,
    pub local_service_port: u16,
}

/// One check of a registration (exactly one of `HTTP`, `TCP`, `AliasService`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentCheck {
    pub name: String,
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// The check mirrors the health of this service ID (sidecar → app).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_service: Option<String>,
    /// Go duration, e.g. `10s`; absent for alias checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
}

/// `duration` in Go's syntax (`10s`, `1500ms`), as Consul parses it.
pub fn go_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

impl Client {
    /// `PUT /v1/agent/service/register`: adds (or replaces) a service on
    /// the local agent.
    pub async fn register_service(&self, service: &ServiceRegistration) -> Result<(), ConsulError> {
        let url = self.url(&["v1", "agent", "service", "register"])?;
        let request = self.http.put(url).json(service).timeout(AGENT_TIMEOUT);
        success_body(self.send(request).await?).await?;
        Ok(())
    }

    /// `PUT /v1/agent/service/deregister/:id`.
    pub async fn deregister_service(&self, id: &str) -> Result<(), ConsulError> {
        let url = self.url(&["v1", "agent", "service", "deregister", id])?;
        let request = self.http.put(url).timeout(AGENT_TIMEOUT);
        success_body(self.send(request).await?).await?;
        Ok(())
    }

    /// `GET /v1/agent/service/:id`: whether the agent knows the service
    /// (200) or not (404).
    pub async fn service_registered(&self, id: &str) -> Result<bool, ConsulError> {
        let url = self.url(&["v1", "agent", "service", id])?;
        let request = self.http.get(url).timeout(AGENT_TIMEOUT);
        let response = self.send(request).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        success_body(response).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(90)), "90s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn a_sidecar_serializes_as_consul_documents_it() {
        let sidecar = ServiceRegistration {
            id: "web-1-sidecar-proxy".into(),
            name: "web-sidecar-proxy".into(),
            kind: Some("connect-proxy".into()),
            tags: vec!["v1".into()],
            meta: BTreeMap::new(),
            address: String::new(),
            port: 15006,
            proxy: Some(ProxyDestination {
                destination_service_name: "web".into(),
                destination_service_id: "web-1".into(),
                local_service_address: "127.0.0.1".into(),
                local_service_port: 8080,
            }),
            checks: vec![AgentCheck {
                name: "Connect Sidecar Listening".into(),
                http: None,
                tcp: Some("127.0.0.1:15006".into()),
                alias_service: None,
                interval: Some("10s".into()),
                timeout: None,
                deregister_critical_service_after: None,
            }],
        };
        let json = serde_json::to_value(&sidecar).expect("serializes");
        assert_eq!(json["ID"], "web-1-sidecar-proxy");
        assert_eq!(json["Kind"], "connect-proxy");
        assert_eq!(json["Proxy"]["DestinationServiceName"], "web");
        assert_eq!(json["Proxy"]["DestinationServiceID"], "web-1");
        assert_eq!(json["Proxy"]["LocalServicePort"], 8080);
        assert_eq!(json["Checks"][0]["TCP"], "127.0.0.1:15006");
        assert_eq!(json["Checks"][0]["Interval"], "10s");
        assert!(json["Checks"][0].get("HTTP").is_none());
    }
}
