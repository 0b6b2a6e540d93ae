import { del, get, getAll, getPage, patch, post } from './request'
import type {
  LocalModel,
  LocalModelInput,
  LocalModelPatch,
  LocalModelType,
  ModelConfig,
  ModelScanReport,
  PageQuery,
} from './types'

/** The local models registry (`/api/models`). */
export const listLocalModels = (query: PageQuery & { model_type?: LocalModelType | '' } = {}) =>
  getPage<LocalModel>('/api/models', { ...query })
export const listAllLocalModels = (model_type?: LocalModelType) => getAll<LocalModel>('/api/models', { model_type })
export const getLocalModel = (id: number) => get<LocalModel>(`/api/models/${id}`)
export const createLocalModel = (body: LocalModelInput) => post<LocalModel>('/api/models', body)
export const updateLocalModel = (id: number, body: LocalModelPatch) => patch<LocalModel>(`/api/models/${id}`, body)
export const deleteLocalModel = (id: number) => del(`/api/models/${id}`)
export const scanLocalModels = () => post<ModelScanReport>('/api/models/scan')
/** The caller's model config for a registry model (existing or new): "chat with it" in one click. */
export const configForLocalModel = (id: number) => post<ModelConfig>(`/api/models/${id}/model-config`)
