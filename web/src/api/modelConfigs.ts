import { del, get, getAll, getPage, patch, post } from './request'
import type { ModelConfig, ModelConfigInput, PageQuery } from './types'

const enc = encodeURIComponent

export const listModelConfigs = (query: PageQuery = {}) => getPage<ModelConfig>('/api/model-configs', { ...query })
export const listAllModelConfigs = () => getAll<ModelConfig>('/api/model-configs')
export const getModelConfig = (id: string) => get<ModelConfig>(`/api/model-configs/${enc(id)}`)
export const createModelConfig = (body: ModelConfigInput) => post<ModelConfig>('/api/model-configs', body)
export const updateModelConfig = (id: string, body: Partial<ModelConfigInput>) =>
  patch<ModelConfig>(`/api/model-configs/${enc(id)}`, body)
export const deleteModelConfig = (id: string) => del(`/api/model-configs/${enc(id)}`)
