//! JSON bodies of the /v2 API that are not manifests: tag and catalog listings and the
//! referrers index. The shapes are the spec's; nothing else in the server derives Serialize.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Serialize)]
pub struct TagList<'a> {
    pub name: &'a str,
    pub tags: &'a [String],
}

#[derive(Serialize)]
pub struct Catalog<'a> {
    pub repositories: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    pub media_type: &'static str,
    pub manifests: Vec<IndexEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
