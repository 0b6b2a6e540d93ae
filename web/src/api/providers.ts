import { del, get, getAll, getPage, patch, post } from './request'
import type { PageQuery, Provider, ProviderInput, ProviderModel, ProviderSyncResult, ProviderTestResult } from './types'

const enc = encodeURIComponent

export const listProviders = (query: PageQuery = {}) => getPage<Provider>('/api/providers', { ...query })
export const listAllProviders = () => getAll<Provider>('/api/providers')
export const getProvider = (id: string) => get<Provider>(`/api/providers/${enc(id)}`)
export const createProvider = (body: ProviderInput) => post<Provider>('/api/providers', body)
/** An absent `api_key` leaves the stored key unchanged. */
export const updateProvider = (id: string, body: Partial<ProviderInput>) => patch<Provider>(`/api/providers/${enc(id)}`, body)
export const deleteProvider = (id: string) => del(`/api/providers/${enc(id)}`)
export const testProvider = (id: string) => post<ProviderTestResult>(`/api/providers/${enc(id)}/test`)
export const syncProvider = (id: string) => post<ProviderSyncResult>(`/api/providers/${enc(id)}/sync`)

export const listProviderModels = (id: string, query: PageQuery = {}) =>
  getPage<ProviderModel>(`/api/providers/${enc(id)}/models`, { ...query })
export const listAllProviderModels = (id: string) => getAll<ProviderModel>(`/api/providers/${enc(id)}/models`)
export const setProviderModelStatus = (id: string, modelId: string, status: number) =>
  patch<ProviderModel>(`/api/providers/${enc(id)}/models/${enc(modelId)}`, { status })
