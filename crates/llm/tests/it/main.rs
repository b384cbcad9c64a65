//! The LLM layer against real models: the local GGUF model in this process, and llama-cpp-python's
//! OpenAI-compatible server running the same file.

mod local;
mod openai;

use std::sync::Arc;

/// A guarded client over `provider` with the seed policies.
pub fn guarded(provider: Arc<dyn llm::Provider>) -> llm::Llm {
    let policies = Arc::new(resilience::Policies::seed());
    let breakers = Arc::new(resilience::Breakers::new(policies.clone(), None));
    llm::Llm::new(provider, policies, breakers)
}
