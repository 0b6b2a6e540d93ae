import { del, get, getAll, getPage, patch, post } from './request'
import type { PageQuery } from './types'

export const TARGET_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const
export type TargetModule = (typeof TARGET_MODULES)[number]
export const SCHEDULERS = ['cosine', 'linear', 'constant'] as const
export type Scheduler = (typeof SCHEDULERS)[number]

/** LoRA hyper-parameters as the API stores them (R-TRAIN-2); `warmup_steps` or `warmup_ratio` is set, not both. */
export interface TrainingParams {
  learning_rate: number
  epochs: number
  batch_size: number
  gradient_accumulation: number
  max_seq_length: number
  lora_r: number
  lora_alpha: number
  lora_dropout: number
  target_modules: TargetModule[]
  warmup_ratio: number | null
  warmup_steps: number | null
  scheduler: Scheduler
  weight_decay: number
  max_grad_norm: number
  seed: number
  rslora: boolean
}

export interface TrainingConfig {
  id: number
  name: string
  params: TrainingParams
  created_by: number | null
  created_at: string
  updated_at: string | null
}

export interface TrainingPreset {
  id: string
  name: string
  description: string
  params: TrainingParams
}

export interface TrainingConfigInput {
  name: string
  preset?: string
  params?: Partial<TrainingParams>
}

export const listTrainingConfigs = (query: PageQuery = {}) => getPage<TrainingConfig>('/api/training-configs', { ...query })
export const listAllTrainingConfigs = () => getAll<TrainingConfig>('/api/training-configs')
export const getTrainingConfig = (id: number) => get<TrainingConfig>(`/api/training-configs/${id}`)
export const createTrainingConfig = (body: TrainingConfigInput) => post<TrainingConfig>('/api/training-configs', body)
export const updateTrainingConfig = (id: number, body: Partial<TrainingConfigInput>) =>
  patch<TrainingConfig>(`/api/training-configs/${id}`, body)
export const deleteTrainingConfig = (id: number) => del(`/api/training-configs/${id}`)
export const listTrainingPresets = () => get<TrainingPreset[]>('/api/training-configs/presets')
