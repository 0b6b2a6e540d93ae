/** Shapes of the API's JSON, as in api.md (snake_case kept on purpose: no mapping layer). */

export interface Page<T> {
  items: T[]
  total: number
  page: number
  page_size: number
}

export interface PageQuery {
  page?: number
  page_size?: number
  q?: string
}

export type Role = 'user' | 'admin'

export interface User {
  id: number
  email: string
  nickname: string | null
  role: Role
  is_admin: boolean
  is_active: boolean
  created_at: string
  updated_at: string | null
}

export interface TokenAnswer {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  user: User
}

export interface SwanlabSettings {
  mode: string
  project: string
  workspace: string
  api_key?: string
  api_key_masked?: string
}

export interface AdminSettings {
  registration_open: boolean
  allow_private_provider_urls: boolean
  swanlab: SwanlabSettings
}

export type ProviderKind = 'openai' | 'anthropic' | 'ollama' | 'local'
export const PROVIDER_KINDS: ProviderKind[] = ['openai', 'anthropic', 'ollama', 'local']

export interface Provider {
  id: string
  name: string
  kind: ProviderKind
  api_url: string
  api_key_masked: string | null
  description: string | null
  icon_url: string | null
  status: number
  created_at: string
  updated_at: string | null
}

export interface ProviderInput {
  id?: string
  name: string
  kind: ProviderKind
  api_url: string
  api_key?: string
  description?: string
  icon_url?: string
  status?: number
}

export interface ProviderTestResult {
  ok: boolean
  latency_ms: number
  models_seen?: number
  error?: string
}

export interface ProviderSyncResult {
  added: number
  updated: number
  unavailable: number
  total: number
}

export interface ProviderModel {
  id: string
  provider_id: string
  model_id: string
  model_name: string
  size: number | null
  description: string | null
  is_vision: boolean
  status: number
  created_at: string
  updated_at: string | null
}

export interface ModelConfig {
  id: string
  provider_id: string
  provider_name?: string
  model_id: string
  model_name: string
  type: string
  temperature: number
  max_tokens: number
  top_p: number
  top_k: number
  status: number
  created_at: string
  updated_at: string | null
}

export interface ModelConfigInput {
  provider_id: string
  model_id: string
  model_name?: string
  type?: string
  temperature: number
  max_tokens: number
  top_p: number
  top_k: number
  status: number
}

export interface ChatSession {
  id: number
  title: string
  created_at: string
  updated_at: string | null
}

export interface ResponseMetrics {
  ttft_ms: number | null
  ttfa_ms: number | null
  reasoning_tokens: number | null
  answer_tokens: number | null
  answer_tokens_per_s: number | null
  total_ms: number | null
}

export type FinishReason = 'stop' | 'length' | 'stopped' | 'interrupted' | 'error'

export interface ChatMessage {
  id: number
  session_id: number
  role: 'user' | 'assistant' | 'system' | 'error'
  content: string
  /** The reasoning text; the server may name it `reasoning` or `thinking`. */
  reasoning?: string | null
  thinking?: string | null
  model_name?: string | null
  model_config_id?: string | null
  finish_reason?: FinishReason | null
  metrics?: ResponseMetrics | null
  created_at: string
}

export interface SendMessageInput {
  content: string
  model_config_id: string
  system_prompt_id?: number
  system_prompt?: string
}

export interface ComparisonInput {
  input: string
  model_config_ids: string[]
  test_name?: string
  test_prompt_id?: number
  system_prompt?: string
}

export interface ComparisonResult {
  model_config_id: string
  model_name?: string | null
  content?: string | null
  reasoning?: string | null
  error?: string | null
  finish_reason?: FinishReason | null
  metrics?: ResponseMetrics | null
}

export interface Comparison {
  id: number
  test_name: string
  input_data?: string
  input?: string
  models_tested?: string[] | null
  model_config_ids?: string[] | null
  results?: ComparisonResult[] | Record<string, ComparisonResult> | null
  system_prompt?: string | null
  created_at: string
}

export type PromptFormat = 'openai' | 'ollama' | 'custom'

export interface SystemPrompt {
  id: number
  name: string
  content: string
  description: string | null
  format_type: PromptFormat
  category: string
  is_default: boolean
  is_system: boolean
  created_by: number | null
  created_at: string
  updated_at: string | null
}

export interface SystemPromptInput {
  name: string
  content: string
  description?: string
  format_type: PromptFormat
  category: string
  is_default?: boolean
  is_system?: boolean
}

export interface TestPrompt {
  id: number
  title: string
  content: string
  category?: string | null
  created_by: number | null
  created_at: string
  updated_at: string | null
}

export interface TestPromptInput {
  title: string
  content: string
  category?: string
}

/** A row of the local models registry: a base GGUF file or a LoRA adapter on a base. */
export type LocalModelType = 'base' | 'lora'

export interface LocalModel {
  id: number
  name: string
  display_name: string
  model_path: string
  model_type: LocalModelType
  /** `ready`, or `missing` when the files were gone at the last check. */
  status: 'ready' | 'missing' | string
  is_available: boolean
  description: string | null
  /** GGUF header facts for a base; r, lora_alpha, target_modules, base_model_id for an adapter. */
  parameters: Record<string, unknown>
  base_model_id: number | null
  size_bytes: number | null
  created_by: number | null
  created_at: string
  updated_at: string | null
}

export interface LocalModelInput {
  name: string
  display_name?: string
  model_path: string
  model_type: LocalModelType
  base_model_id?: number
  description?: string
}

export interface LocalModelPatch {
  display_name?: string
  description?: string
  is_available?: boolean
}

export interface ModelScanReport {
  added: string[]
  missing: string[]
  restored: string[]
  skipped: string[]
}

export type TrainingStatus = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled'

/** One optimizer step, as the task's `metrics` event carries it. */
export interface TrainingMetrics {
  step: number
  total_steps: number
  epoch: number
  loss: number
  lr: number
  grad_norm: number
  tokens_per_s: number
  /** Seconds since training started. */
  elapsed: number
  /** Seconds left, estimated. */
  eta: number
}

/** The task's `status` event. */
export interface TrainingStatusEvent {
  status: TrainingStatus
  progress: number
  current_step?: number | null
  total_steps?: number | null
  eta_seconds?: number | null
  swanlab_url?: string | null
  error?: string | null
}

/** The final report of a completed task; older or newer servers may name fields differently. */
export type TrainingReport = Record<string, unknown>

export interface TrainingTask {
  id: number
  name: string
  model_name: string
  model_id?: number | null
  dataset_id: number | null
  dataset_name?: string | null
  config_id: number | null
  config_name?: string | null
  status: TrainingStatus
  /** 0–100. */
  progress: number
  current_step?: number | null
  total_steps?: number | null
  eta_seconds?: number | null
  output_dir?: string | null
  swanlab_url?: string | null
  started_at?: string | null
  completed_at?: string | null
  created_by?: number | null
  created_at: string
  error_message?: string | null
  /** The adapter registered in the models registry when the task completed. */
  adapter_model_id?: number | null
  /** An object, or its JSON text. */
  report?: TrainingReport | string | null
}

export interface TrainingTaskInput {
  name: string
  model_id?: number
  model_name?: string
  dataset_id: number
  config_id: number
}

/** What the task form needs from a dataset or a training config: a name to pick it by. */
export interface NamedOption {
  id: number
  name: string
  record_count?: number | null
  format_type?: string | null
}
