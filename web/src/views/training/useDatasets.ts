import { reactive, ref, shallowRef } from 'vue'
import { ElMessage, ElMessageBox } from 'element-plus'
import { ApiError, errorMessage } from '@/api/errors'
import {
  DATASET_EXTENSIONS,
  type Dataset,
  type DatasetFormat,
  type DatasetPreview,
  type DatasetProblem,
  type DatasetStats,
  datasetStats,
  deleteDataset,
  downloadDataset,
  importDataset,
  listDatasets,
  previewDataset,
  splitUploadErrors,
  updateDataset,
  uploadDataset,
} from '@/api/datasets'
import { listSessions } from '@/api/chat'
import { listComparisons } from '@/api/comparisons'
import { usePagedList } from '@/composables/usePagedList'
import { t } from '@/locales'

export const PREVIEW_PAGE = 10

/** A file name the upload accepts (the server sniffs the content too). */
export function acceptedFile(name: string): boolean {
  const lower = name.toLowerCase()
  return DATASET_EXTENSIONS.some((ext) => lower.endsWith(ext))
}

/** A default dataset name from a file name: `chat-v2.jsonl` → `chat-v2`. */
export function nameFromFile(name: string): string {
  const dot = name.lastIndexOf('.')
  return dot > 0 ? name.slice(0, dot) : name
}

interface SourceOption {
  id: number
  label: string
}

/** The datasets page: list, upload with progress and per-record errors, import, preview, stats, rename, delete. */
export function useDatasets() {
  const list = usePagedList((q) => listDatasets(q))

  // Upload.
  const uploadOpen = ref(false)
  const uploading = ref(false)
  const progress = ref(0)
  const file = shallowRef<File | null>(null)
  const upload = reactive({ name: '', description: '', format: 'auto' as DatasetFormat | 'auto' })
  const formErrors = ref<Record<string, string>>({})
  const problems = ref<DatasetProblem[]>([])
  const uploadError = ref<string | null>(null)

  function openUpload(): void {
    file.value = null
    Object.assign(upload, { name: '', description: '', format: 'auto' })
    formErrors.value = {}
    problems.value = []
    uploadError.value = null
    progress.value = 0
    uploadOpen.value = true
  }

  function pickFile(f: File | null): void {
    file.value = f
    problems.value = []
    uploadError.value = null
    formErrors.value = {}
    if (f && !upload.name) upload.name = nameFromFile(f.name)
  }

  async function submitUpload(): Promise<void> {
    formErrors.value = {}
    problems.value = []
    uploadError.value = null
    if (!file.value) {
      formErrors.value = { file: t('datasets.fileRequired') }
      return
    }
    if (!acceptedFile(file.value.name)) {
      formErrors.value = { file: t('datasets.badExtension') }
      return
    }
    uploading.value = true
    progress.value = 0
    try {
      const d = await uploadDataset(
        { file: file.value, name: upload.name, description: upload.description || undefined, format: upload.format },
        (f) => (progress.value = Math.round(f * 100)),
      )
      ElMessage.success(t('datasets.uploaded', { name: d.name, count: d.record_count ?? 0 }))
      uploadOpen.value = false
      await list.search()
    } catch (err) {
      // The file did arrive when the server answered; only a network failure stops short.
      if (err instanceof ApiError && err.status > 0) progress.value = 100
      if (err instanceof ApiError && err.status === 422) {
        const split = splitUploadErrors(err.fields)
        formErrors.value = split.form
        problems.value = split.problems
      } else {
        uploadError.value = errorMessage(err)
      }
    } finally {
      uploading.value = false
    }
  }

  // Import from a session or a comparison.
  const importOpen = ref(false)
  const importing = ref(false)
  const importForm = reactive({ source: 'session' as 'session' | 'comparison', id: null as number | null, name: '' })
  const importErrors = ref<Record<string, string>>({})
  const sources = shallowRef<SourceOption[]>([])
  const sourcesLoading = ref(false)

  async function loadSources(): Promise<void> {
    sourcesLoading.value = true
    sources.value = []
    importForm.id = null
    try {
      if (importForm.source === 'session') {
        const page = await listSessions({ page_size: 100 })
        sources.value = page.items.map((s) => ({ id: s.id, label: s.title }))
      } else {
        const page = await listComparisons({ page_size: 100 })
        sources.value = page.items.map((c) => ({ id: c.id, label: c.test_name }))
      }
    } catch (err) {
      ElMessage.error(errorMessage(err))
    } finally {
      sourcesLoading.value = false
    }
  }

  async function openImport(): Promise<void> {
    Object.assign(importForm, { source: 'session', id: null, name: '' })
    importErrors.value = {}
    importOpen.value = true
    await loadSources()
  }

  async function submitImport(): Promise<void> {
    if (importForm.id === null) return
    importErrors.value = {}
    importing.value = true
    try {
      const d = await importDataset({ source: importForm.source, id: importForm.id, name: importForm.name || undefined })
      ElMessage.success(t('datasets.uploaded', { name: d.name, count: d.record_count ?? 0 }))
      importOpen.value = false
      await list.search()
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) importErrors.value = { ...err.fields }
      else ElMessage.error(errorMessage(err))
    } finally {
      importing.value = false
    }
  }

  // Detail: preview and statistics.
  const detailOpen = ref(false)
  const current = shallowRef<Dataset | null>(null)
  const preview = shallowRef<DatasetPreview | null>(null)
  const previewPage = ref(1)
  const previewLoading = ref(false)
  const previewError = ref<string | null>(null)
  const stats = shallowRef<DatasetStats | null>(null)
  const statsLoading = ref(false)
  const statsError = ref<string | null>(null)
  const tab = ref<'preview' | 'stats'>('preview')

  async function loadPreview(): Promise<void> {
    if (!current.value) return
    previewLoading.value = true
    previewError.value = null
    try {
      preview.value = await previewDataset(current.value.id, (previewPage.value - 1) * PREVIEW_PAGE, PREVIEW_PAGE)
    } catch (err) {
      previewError.value = errorMessage(err)
    } finally {
      previewLoading.value = false
    }
  }

  async function loadStats(): Promise<void> {
    if (!current.value) return
    statsLoading.value = true
    statsError.value = null
    try {
      stats.value = await datasetStats(current.value.id)
    } catch (err) {
      statsError.value = errorMessage(err)
    } finally {
      statsLoading.value = false
    }
  }

  async function openDetail(d: Dataset, which: 'preview' | 'stats' = 'preview'): Promise<void> {
    current.value = d
    preview.value = null
    stats.value = null
    previewPage.value = 1
    tab.value = which
    detailOpen.value = true
    await Promise.all([loadPreview(), loadStats()])
  }

  // Rename / describe.
  const editOpen = ref(false)
  const editing = shallowRef<Dataset | null>(null)
  const editForm = reactive({ name: '', description: '' })
  const editErrors = ref<Record<string, string>>({})
  const saving = ref(false)

  function openEdit(d: Dataset): void {
    editing.value = d
    Object.assign(editForm, { name: d.name, description: d.description ?? '' })
    editErrors.value = {}
    editOpen.value = true
  }

  async function saveEdit(): Promise<void> {
    if (!editing.value) return
    saving.value = true
    editErrors.value = {}
    try {
      await updateDataset(editing.value.id, { name: editForm.name, description: editForm.description })
      ElMessage.success(t('common.saved'))
      editOpen.value = false
      await list.load()
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) editErrors.value = { ...err.fields }
      else ElMessage.error(errorMessage(err))
    } finally {
      saving.value = false
    }
  }

  async function download(d: Dataset): Promise<void> {
    try {
      await downloadDataset(d)
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  async function remove(d: Dataset): Promise<void> {
    const ok = await ElMessageBox.confirm(t('datasets.confirmDelete', { name: d.name }), t('common.confirm'), {
      type: 'warning',
    }).catch(() => false)
    if (!ok) return
    try {
      await deleteDataset(d.id)
      ElMessage.success(t('common.deleted'))
      await list.load()
    } catch (err) {
      ElMessage.error(err instanceof ApiError && err.code === 'dataset_in_use' ? t('datasets.inUseHint') : errorMessage(err))
      await list.load()
    }
  }

  return {
    ...list,
    uploadOpen,
    uploading,
    progress,
    file,
    upload,
    formErrors,
    problems,
    uploadError,
    openUpload,
    pickFile,
    submitUpload,
    importOpen,
    importing,
    importForm,
    importErrors,
    sources,
    sourcesLoading,
    loadSources,
    openImport,
    submitImport,
    detailOpen,
    current,
    preview,
    previewPage,
    previewLoading,
    previewError,
    stats,
    statsLoading,
    statsError,
    tab,
    loadPreview,
    loadStats,
    openDetail,
    editOpen,
    editing,
    editForm,
    editErrors,
    saving,
    openEdit,
    saveEdit,
    download,
    remove,
  }
}
