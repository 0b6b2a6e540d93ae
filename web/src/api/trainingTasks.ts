import { del, get, getAll, getPage, post } from './request'
import { streamRequest, type StreamEvent } from './sse'
import type { NamedOption, PageQuery, TrainingTask, TrainingTaskInput } from './types'

export const listTrainingTasks = (query: PageQuery & { status?: string } = {}) =>
  getPage<TrainingTask>('/api/training-tasks', { ...query })
export const getTrainingTask = (id: number) => get<TrainingTask>(`/api/training-tasks/${id}`)
export const createTrainingTask = (body: TrainingTaskInput) => post<TrainingTask>('/api/training-tasks', body)
export const deleteTrainingTask = (id: number) => del(`/api/training-tasks/${id}`)
export const cancelTrainingTask = (id: number) => post<TrainingTask>(`/api/training-tasks/${id}/cancel`)
export const trainingTaskLog = (id: number, tail = 500) =>
  get<{ lines: string[]; total?: number } | string>(`/api/training-tasks/${id}/log`, { params: { tail } })

/** Pickers of the task form: the caller's datasets and training configs. */
export const listDatasetOptions = () => getAll<NamedOption>('/api/datasets')
export const listTrainingConfigOptions = () => getAll<NamedOption>('/api/training-configs')
export const getDatasetOption = (id: number) => get<NamedOption>(`/api/datasets/${id}`)
export const getTrainingConfigOption = (id: number) => get<NamedOption>(`/api/training-configs/${id}`)

/**
 * The task's event stream (`log`, `metrics`, `status`); the server replays the status, the whole
 * metrics history and the log tail first, then sends live events, and ends once the task finished.
 */
export const streamTrainingTask = (id: number, onEvent: (ev: StreamEvent) => void, signal: AbortSignal) =>
  streamRequest(`/api/training-tasks/${id}/events`, { method: 'GET', onEvent, signal })
